"""The docs-ingest example end to end through the API: every stage lands on disk as documented."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tests.conftest import REPO, Stack

EXAMPLE = REPO / "examples" / "docs-ingest"


async def test_docs_ingest_end_to_end(stack: Stack) -> None:
    config = await stack.create_config((EXAMPLE / "pipeline.yaml").read_text())
    resp = await stack.run(config["id"], {"base_dir": str(EXAMPLE)}, tag="docs-ingest-e2e")
    assert resp.status_code == 200, resp.text
    done = await stack.wait(resp.json()["id"])
    assert done["status"] == "completed", done
    execution_id = done["id"]

    sources = sorted(p for p in (EXAMPLE / "docs").rglob("*") if p.is_file())
    documents = stack.objects(execution_id, "documents")
    assert len(documents) == len(sources) == 5
    converted = stack.objects(execution_id, "markdown_converted")
    assert {p.suffix for p in converted} == {".md"} and len(converted) == len(sources)
    ops = (stack.storage_root / execution_id / "markdown_converted" / "guides" / "operations.md").read_text()
    assert ops.startswith("# Operating Sluice") and "## Cancelling" in ops
    assert "<p>" not in ops and "font-family" not in ops and "**API**" in ops

    segments = stack.objects(execution_id, "markdown_segmented")
    headings = [p.read_text().splitlines()[0] for p in segments]
    assert all(h.startswith("#") for h in headings)
    assert "## Replay" in headings and "### Lineage" not in headings  # max_level: 2 keeps H3 inside
    # The sidecar the README's walkthrough shows exists under that name.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    shown = re.search(r"markdown_segmented/(\S+\.meta\.json)", readme)
    assert shown and (stack.storage_root / execution_id / "markdown_segmented" / shown.group(1)).is_file()

    embeddings = stack.objects(execution_id, "embeddings")
    assert len(embeddings) == len(segments)
    vector = json.loads(embeddings[0].read_text())["vector"]
    assert len(vector) == 64 and math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-4)

    index_lines = (stack.storage_root / execution_id / "index" / "index.jsonl").read_text().splitlines()
    manifest = json.loads((stack.storage_root / execution_id / "index" / "manifest.json").read_text())
    assert len(index_lines) == manifest["entries"] == len(segments)
    assert len(manifest["documents"]) == len(sources)

    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{execution_id}/routes")).json()["routes"]
    }
    assert routes["embedding_generator"]["messages_processed"] == len(segments)
    assert routes["index_writer"]["messages_in"] == len(segments) and routes["index_writer"][
        "rows_written"
    ] == len(segments)
    assert done["objects_written"] == 2 * len(sources) + 2 * len(segments) + 2

    # Deterministic: a second run produces byte-identical embeddings.
    again = await stack.wait((await stack.run(config["id"], {"base_dir": str(EXAMPLE)})).json()["id"])
    second = stack.objects(again["id"], "embeddings")
    assert [json.loads(p.read_text())["vector"] for p in second] == [
        json.loads(p.read_text())["vector"] for p in embeddings
    ]
