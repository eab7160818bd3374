"""Map settings per place dataset: projection, outlines (``worldprobe.geodata``) and the region colouring points."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from worldprobe.errors import WorldprobeError
from worldprobe.geodata import WGS84, points

CENSUS_REGIONS = {
    "Northeast": "CT ME MA NH RI VT NJ NY PA",
    "Midwest": "IL IN MI OH WI IA KS MN MO NE ND SD",
    "South": "DE DC FL GA MD NC SC VA WV AL KY MS TN AR LA OK TX",
    "West": "AZ CO ID MT NV NM UT WY AK CA HI OR WA",
}
STATE_REGION = {state: region for region, states in CENSUS_REGIONS.items() for state in states.split()}
TOP_GROUPS = 9


@dataclass(frozen=True)
class MapSpec:
    """How to draw one place dataset: projection (km), outline loader in ``worldprobe.geodata``, view, colouring."""

    name: str
    crs: str
    projection_name: str
    outlines: str  # function name in worldprobe.geodata
    region_label: str
    region_column: str  # outline column naming the region of the polygon a true point falls in ("" = none)
    simplify_km: float  # outline simplification tolerance for drawing
    view: tuple[float, float, float, float] | None  # lon_min, lon_max, lat_min, lat_max; None = the outlines' bounds

    def project(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Longitude/latitude (degrees) to projected x/y (km)."""
        projected = points(lat, lon).to_crs(self.crs).geometry
        return projected.x.to_numpy(), projected.y.to_numpy()


# fmt: off
MAPS: dict[str, MapSpec] = {
    "world": MapSpec("world", "+proj=eqearth +units=km", "Equal Earth", "world_countries", "continent", "region", 8,
                     None),
    "us": MapSpec("us", "+proj=aea +lat_1=29.5 +lat_2=45.5 +lat_0=37.5 +lon_0=-96 +units=km", "Albers equal-area",
                  "us_states", "census region", "", 2, (-125.0, -66.5, 24.0, 49.6)),
    "nyc": MapSpec("nyc", "+proj=tmerc +lat_0=40.7 +lon_0=-74 +units=km", "transverse Mercator", "nyc_boroughs",
                   "borough", "name", 0.02, (-74.27, -73.69, 40.49, 40.92)),
}
# fmt: on
DATASET_MAPS = {"world_place": "world", "us_place": "us", "nyc_place": "nyc"}


def map_for(dataset: str, latitude: pd.Series | None = None, longitude: pd.Series | None = None) -> MapSpec:
    """The map of a place dataset; for one the report does not know (your own), the smallest map whose box holds
    every true point (NYC, the contiguous US, else the world)."""
    if dataset in DATASET_MAPS or latitude is None or longitude is None:
        return MAPS[DATASET_MAPS.get(dataset, "world")]
    for name in ("nyc", "us"):
        west, east, south, north = MAPS[name].view
        if latitude.between(south, north).all() and longitude.between(west, east).all():
            return MAPS[name]
    return MAPS["world"]


@functools.cache
def outlines(name: str) -> tuple[gpd.GeoDataFrame | None, str]:
    """The outline table (a GeoDataFrame in WGS 84) of map ``name`` and "", or ``None`` and the reason."""
    spec = MAPS[name]
    try:
        from worldprobe import geodata

        table = getattr(geodata, spec.outlines)()
    except (ImportError, AttributeError, WorldprobeError, OSError) as error:
        return None, f"{name} map drawn without outlines: worldprobe.geodata.{spec.outlines}() failed ({error})"
    if "geometry" not in table.columns:
        return None, f"{name} map drawn without outlines: {spec.outlines}() has no geometry column"
    return gpd.GeoDataFrame(table, geometry="geometry", crs=getattr(table, "crs", None) or WGS84), ""


@functools.cache
def projected_outlines(name: str) -> gpd.GeoSeries:
    """Map ``name``'s outlines in its projection (km), simplified for drawing (empty without outlines)."""
    spec, (table, _) = MAPS[name], outlines(name)
    if table is None:
        return gpd.GeoSeries([], crs=spec.crs)
    return table.geometry.to_crs(spec.crs).simplify(spec.simplify_km, preserve_topology=True)


def regions(spec: MapSpec, entities: pd.DataFrame, outline_table: gpd.GeoDataFrame | None) -> pd.Series:
    """The true region of each entity: continent (world), census region (US), borough (NYC).

    From the outline polygon each true point falls in when the map has outlines, else from the entity's group column.
    """
    if spec.name == "us" and "state_id" in entities:
        return entities["state_id"].map(STATE_REGION).fillna("other")
    if outline_table is not None and spec.region_column in outline_table.columns:
        return _region_of_points(spec, entities, outline_table, spec.region_column)
    fallback = next((c for c in ("borough", "country", "entity_type") if c in entities), None)
    return _top_groups(entities, fallback) if fallback else pd.Series("all", index=entities.index)


def _region_of_points(spec: MapSpec, entities: pd.DataFrame, table: gpd.GeoDataFrame, column: str) -> pd.Series:
    """The ``column`` of the outline nearest to each true point in the map's projection (0 km when the point lies
    inside it; the first outline in table order on a tie), by a geopandas nearest join."""
    true = points(entities["true_latitude"], entities["true_longitude"]).to_crs(spec.crs)
    outline = table[[column, "geometry"]].reset_index(drop=True)
    layer = gpd.GeoDataFrame(outline, geometry="geometry", crs=getattr(table, "crs", None) or WGS84).to_crs(spec.crs)
    joined = gpd.sjoin_nearest(true, layer, how="inner")
    nearest = joined.groupby(level=0)["index_right"].min()
    names = pd.Series(layer[column].to_numpy()[nearest.to_numpy()], index=nearest.index).replace("", np.nan)
    return pd.Series(names.reindex(range(len(entities))).fillna("other").to_numpy(), index=entities.index)


def _top_groups(entities: pd.DataFrame, column: str) -> pd.Series:
    values = entities[column].fillna("unknown").astype(str)
    top = values.value_counts().head(TOP_GROUPS).index
    return values.where(values.isin(top), "other")


def place_predictions(predictions: pd.DataFrame | str | Path, *, control: str = "none") -> gpd.GeoDataFrame:
    """A place run's predictions as a GeoDataFrame (WGS 84): one row per entity and layer of ``control`` (``none``,
    the probe itself, by default), its ``geometry`` the predicted position, ``true_position`` the true one and
    ``error_km`` the great-circle distance between them. ``predictions`` is a results folder or its
    ``predictions.parquet`` table; ``.to_crs(...)``, ``.plot(...)`` and spatial joins work on the result."""
    from worldprobe.probes.results import PREDICTIONS

    if not isinstance(predictions, pd.DataFrame):
        folder = Path(predictions)
        path = folder / f"{PREDICTIONS}.parquet" if folder.is_dir() else folder
        if not path.exists():
            raise WorldprobeError("no predictions here", file=path, hint="run `worldprobe probe` on a place dataset")
        predictions = pd.read_parquet(path)
    needed = ["true_latitude", "true_longitude", "pred_latitude", "pred_longitude"]
    if not set(needed) <= set(predictions.columns):
        raise WorldprobeError("not a place run: no latitude and longitude predictions", field="predictions",
                              hint=f"needs the columns {', '.join(needed)}")  # fmt: skip
    rows = predictions[predictions["control"].fillna("none") == control].reset_index(drop=True)
    frame = points(rows["pred_latitude"], rows["pred_longitude"]).set_index(rows.index)
    out = gpd.GeoDataFrame(rows.assign(error_km=error_km(rows)), geometry=frame.geometry, crs=WGS84)
    true_points = points(rows["true_latitude"], rows["true_longitude"]).geometry.to_numpy()
    out["true_position"] = gpd.GeoSeries(true_points, index=out.index, crs=WGS84)  # .set_geometry("true_position")
    return out


def error_km(rows: pd.DataFrame) -> np.ndarray:
    """Each entity's error in km as the probe stage measures it (great circle on the mean-radius sphere,
    :func:`worldprobe.probes.metrics.haversine_km`), so a map's median equals the verdict table's."""
    from worldprobe.probes.metrics import haversine_km

    true = rows[["true_latitude", "true_longitude"]].set_axis(["latitude", "longitude"], axis=1)
    pred = rows[["pred_latitude", "pred_longitude"]].set_axis(["latitude", "longitude"], axis=1)
    return haversine_km(true, pred)
