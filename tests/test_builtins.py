"""Built-in handlers in real pipelines: read_files (folder and S3 bucket), split_text, map_json."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Stack, StackFactory
from tests.storage_servers import S3Server

SPLIT = """
name: splitter
init_message: {route: load, payload: {source: inbox, pattern: "*.txt"}}
routes:
  - {name: load, handler: read_files, stage: files, next: [split]}
  - {name: split, handler: split_text, stage: chunks}
"""

MAP = """
name: mapper
init_message: {route: load, payload: {source: inbox, pattern: "data/*.json"}}
routes:
  - {name: load, handler: read_files, stage: files, next: [mapper]}
  - name: mapper
    handler: map_json
    stage: mapped
    params:
      fields: {name: user.name, id: user.id, first_tag: tags.0}
"""


def make_inbox(root: Path) -> None:
    (root / "inbox" / "data").mkdir(parents=True)
    (root / "inbox" / "notes.txt").write_text("first paragraph\n\nsecond paragraph\n\n\n  third  \n")
    (root / "inbox" / "data" / "users.json").write_text(
        json.dumps(
            [
                {"user": {"name": "ada", "id": 1}, "tags": ["x", "y"]},
                {"user": {"name": "bob", "id": 2}, "tags": []},
            ]
        )
    )
    (root / "inbox" / "data" / "broken.txt").write_text("not json, and not matched by the pattern")
    (root / "inbox" / ".hidden.txt").write_text("never read")


async def test_read_files_and_split_text(stack: Stack, tmp_path: Path) -> None:
    make_inbox(tmp_path)
    config = await stack.create_config(SPLIT)
    done = await stack.wait((await stack.run(config["id"], {"base_dir": str(tmp_path)})).json()["id"])
    assert done["status"] == "completed", done
    root = stack.storage_root / done["id"]
    # A pattern without '/' matches file names at any depth; dot-files are never read.
    files = [p.relative_to(root / "files").as_posix() for p in stack.objects(done["id"], "files")]
    assert files == ["data/broken.txt", "notes.txt"]
    chunks = sorted((root / "chunks" / "notes.txt").glob("*.txt"))
    assert [p.read_text() for p in chunks] == ["first paragraph", "second paragraph", "third"]
    assert [p.name for p in chunks] == ["00000.txt", "00001.txt", "00002.txt"]


async def test_map_json_projects_fields_per_record(stack: Stack, tmp_path: Path) -> None:
    make_inbox(tmp_path)
    config = await stack.create_config(MAP)
    done = await stack.wait((await stack.run(config["id"], {"base_dir": str(tmp_path)})).json()["id"])
    assert done["status"] == "completed", done
    mapped = json.loads((stack.storage_root / done["id"] / "mapped" / "data" / "users.json").read_text())
    assert mapped == [{"name": "ada", "id": 1, "first_tag": "x"}, {"name": "bob", "id": 2, "first_tag": None}]


async def test_map_json_fails_fast_on_invalid_json(stack: Stack, tmp_path: Path) -> None:
    make_inbox(tmp_path)
    config = await stack.create_config(MAP.replace('"data/*.json"', '"data/*.txt"'))
    done = await stack.wait(
        (await stack.run(config["id"], {"base_dir": str(tmp_path)})).json()["id"], timeout=30
    )
    assert done["status"] == "failed" and "not valid JSON" in done["error"]
    routes = {
        r["route"]: r
        for r in (await stack.http.get(f"/api/v1/executions/{done['id']}/routes")).json()["routes"]
    }
    assert routes["mapper"]["retries"] == 0


async def test_read_files_from_a_bucket(make_stack: StackFactory, moto_s3: S3Server) -> None:
    bucket = moto_s3.create_bucket()
    client = moto_s3.client()
    client.put_object(Bucket=bucket, Key="inbox/a.txt", Body=b"alpha")
    client.put_object(Bucket=bucket, Key="inbox/sub/b.txt", Body=b"beta")
    client.put_object(Bucket=bucket, Key="elsewhere/c.txt", Body=b"gamma")
    stack = await make_stack(
        s3_endpoint_url=moto_s3.endpoint_url,
        s3_region=moto_s3.region,
        s3_access_key_id=moto_s3.access_key_id,
        s3_secret_access_key=moto_s3.secret_access_key,
        read_roots=f"s3://{bucket}/inbox",  # only this prefix of the bucket
    )
    yaml_text = SPLIT.replace(
        'source: inbox, pattern: "*.txt"', f'source: "s3://{bucket}/inbox", pattern: "*.txt"'
    )
    config = await stack.create_config(yaml_text)
    done = await stack.wait((await stack.run(config["id"])).json()["id"])
    assert done["status"] == "completed", done
    files = stack.objects(done["id"], "files")
    assert [p.relative_to(stack.storage_root / done["id"] / "files").as_posix() for p in files] == [
        "a.txt",
        "sub/b.txt",
    ]
    assert [p.read_text() for p in files] == ["alpha", "beta"]

    # The rest of the bucket is not a read root.
    outside = await stack.create_config(
        yaml_text.replace("/inbox", "/elsewhere").replace("name: ", "name: x", 1)
    )
    failed = await stack.wait((await stack.run(outside["id"])).json()["id"])
    assert failed["status"] == "failed" and "SLUICE_READ_ROOTS" in failed["error"]
