"""The OpenAPI schema against the server, by schemathesis: generated (valid and invalid) requests to every operation,
a bounded number of examples each; no 5xx, and every status answered is one the schema documents."""

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

from conftest import make_shapes_csv  # noqa: E402


def _app():
    import tempfile
    from pathlib import Path

    from cliptune.data.load import load_dataset
    from cliptune.models.registry import load_model
    from cliptune.search.index import build_index
    from cliptune.search.serve import create_app

    model = load_model("tiny-clip")
    root = Path(tempfile.mkdtemp(prefix="cliptune-schema-"))
    records = load_dataset(make_shapes_csv(root / "shapes")).records[:16]
    index = build_index(model, records, root / "index", progress=False)
    return create_app(model, index, max_upload_bytes=200_000)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_answer_is_documented(case):
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
