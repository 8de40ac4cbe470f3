"""The example pipeline and a replay, end to end with stages in S3 (moto's and SeaweedFS's servers)."""

from __future__ import annotations

import json

import pytest

from sluice.storage.s3 import S3Storage
from tests.conftest import REPO, StackFactory
from tests.storage_servers import S3Server

EXAMPLE = REPO / "examples" / "docs-ingest"


@pytest.fixture(params=["moto", "seaweedfs"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue("moto_s3" if request.param == "moto" else "seaweed_s3")


async def test_example_and_replay_on_s3(make_stack: StackFactory, s3: S3Server) -> None:
    bucket = s3.create_bucket()
    stack = await make_stack(
        storage_url=f"s3://{bucket}/sluice data",
        s3_endpoint_url=s3.endpoint_url,
        s3_region=s3.region,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
    )
    storage = S3Storage(bucket=bucket, prefix="sluice data", **s3.storage_kwargs())
    try:
        config = await stack.create_config((EXAMPLE / "pipeline.yaml").read_text())
        run = await stack.run(config["id"], {"base_dir": str(EXAMPLE)})
        done = await stack.wait(run.json()["id"], timeout=120)
        assert done["status"] == "completed", done
        execution_id = done["id"]

        segments = [
            k
            async for k in storage.list(f"{execution_id}/markdown_segmented/")
            if not k.endswith(".meta.json")
        ]
        sidecars = [
            k async for k in storage.list(f"{execution_id}/markdown_segmented/") if k.endswith(".meta.json")
        ]
        assert segments and len(sidecars) == len(segments)
        meta = json.loads(await storage.get(sidecars[0]))
        assert meta["stage"] == "markdown_segmented" and meta["route"] == "markdown_segmenter"
        manifest = json.loads(await storage.get(f"{execution_id}/index/manifest.json"))
        assert manifest["entries"] == len(segments)
        # Objects really live in the bucket under the configured prefix.
        raw = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"sluice data/{execution_id}/index/")
        assert {o["Key"] for o in raw["Contents"]} >= {f"sluice data/{execution_id}/index/manifest.json"}

        # Replay the stored segments into the embedding route: only the downstream routes run.
        resp = await stack.http.post(
            f"/api/v1/executions/{execution_id}/replay",
            json={
                "replay_source": "storage",
                "from_stage": "markdown_segmented",
                "to_route": "embedding_generator",
            },
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["replay"]["objects_published"] == len(segments)
        replayed = await stack.wait(resp.json()["id"], timeout=120)
        assert replayed["status"] == "completed"
        embeddings = [
            k async for k in storage.list(f"{replayed['id']}/embeddings/") if not k.endswith(".meta.json")
        ]
        assert len(embeddings) == len(segments)
        assert not [k async for k in storage.list(f"{replayed['id']}/documents/")]
        routes = {
            r["route"]: r
            for r in (await stack.http.get(f"/api/v1/executions/{replayed['id']}/routes")).json()["routes"]
        }
        assert routes["document_loader"]["status"] == "skipped"
        assert routes["index_writer"]["status"] == "completed"
    finally:
        await storage.close()
