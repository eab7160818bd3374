"""Stage 4: maps, timelines, layer curves and the HTML report."""
