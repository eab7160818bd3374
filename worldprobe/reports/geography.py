"""Map settings per place dataset: projection, outlines (``worldprobe.geodata``) and the region colouring points."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from worldprobe.errors import WorldprobeError

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

    @functools.cached_property
    def transformer(self) -> Transformer:
        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    def project(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Longitude/latitude (degrees) to projected x/y (km)."""
        x, y = self.transformer.transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(x), np.asarray(y)


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


def map_for(dataset: str) -> MapSpec:
    """The map of a place dataset (world for place datasets the report does not know)."""
    return MAPS[DATASET_MAPS.get(dataset, "world")]


@functools.cache
def outlines(name: str) -> tuple[pd.DataFrame | None, str]:
    """The outline table (shapely ``geometry`` column) of map ``name`` and "", or ``None`` and the reason."""
    spec = MAPS[name]
    try:
        from worldprobe import geodata

        table = getattr(geodata, spec.outlines)()
    except (ImportError, AttributeError, WorldprobeError, OSError) as error:
        return None, f"{name} map drawn without outlines: worldprobe.geodata.{spec.outlines}() failed ({error})"
    if "geometry" not in table.columns:
        return None, f"{name} map drawn without outlines: {spec.outlines}() has no geometry column"
    return table, ""


def project_geometries(spec: MapSpec, geometries: np.ndarray) -> np.ndarray:
    """Shapely geometries in lon/lat to the map's projection."""

    def forward(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(spec.transformer.transform(xy[:, 0], xy[:, 1]))

    projected = shapely.transform(np.asarray(geometries, dtype=object), forward)
    return shapely.simplify(projected, spec.simplify_km, preserve_topology=True)


def regions(spec: MapSpec, entities: pd.DataFrame, outline_table: pd.DataFrame | None) -> pd.Series:
    """The true region of each entity: continent (world), census region (US), borough (NYC).

    From the outline polygon each true point falls in when the map has outlines, else from the entity's group column.
    """
    if spec.name == "us" and "state_id" in entities:
        return entities["state_id"].map(STATE_REGION).fillna("other")
    if outline_table is not None and spec.region_column in outline_table.columns:
        return _region_of_points(entities, outline_table, spec.region_column)
    fallback = next((c for c in ("borough", "country", "entity_type") if c in entities), None)
    return _top_groups(entities, fallback) if fallback else pd.Series("all", index=entities.index)


def _region_of_points(entities: pd.DataFrame, table: pd.DataFrame, column: str) -> pd.Series:
    """The ``column`` of the outline nearest to each true point (0 km when the point lies inside it)."""
    tree = shapely.STRtree(table["geometry"].to_numpy())
    points = shapely.points(entities["true_longitude"].to_numpy(), entities["true_latitude"].to_numpy())
    which, nearest = tree.query_nearest(points, all_matches=False)
    names = pd.Series(table[column].to_numpy()[nearest], index=which).replace("", np.nan)
    return pd.Series(names.reindex(range(len(entities))).fillna("other").to_numpy(), index=entities.index)


def _top_groups(entities: pd.DataFrame, column: str) -> pd.Series:
    values = entities[column].fillna("unknown").astype(str)
    top = values.value_counts().head(TOP_GROUPS).index
    return values.where(values.isin(top), "other")
