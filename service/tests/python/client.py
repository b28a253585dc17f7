"""A force system in Python talking to Casebook over gRPC.

Opens a burglary, records the report, takes the GIS lookup as an external
job worker and completes it, then reads the case back. Run by
service/tests/python_client.rs against a real `casebook serve`:

    python3 client.py <stubs dir> <address> <handler token> <worker token>

Exits non-zero (with the reason on stderr) if anything is not as expected.
"""

import sys
import time

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from casebook.v1 import cases_pb2, cases_pb2_grpc, common_pb2  # noqa: E402
from casebook.v1 import workers_pb2, workers_pb2_grpc  # noqa: E402

address, handler_token, worker_token = sys.argv[2], sys.argv[3], sys.argv[4]


def auth(token):
    return (("authorization", "Bearer " + token),)


def text(s):
    return common_pb2.Value(text=s)


channel = grpc.insecure_channel(address)
cases = cases_pb2_grpc.CasesStub(channel)
workers = workers_pb2_grpc.WorkersStub(channel)

# Without a token: UNAUTHENTICATED.
try:
    cases.GetCase(cases_pb2.GetCaseRequest(case_id="burglary-1"))
    sys.exit("a call without a token was answered")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.code()

report = common_pb2.CaseFile(
    fields={
        "reported_at": text("2026-12-06T10:15:00Z"),
        "incident_location": text("loc-3-station-road"),
        "incident_point": common_pb2.Value(geo_point=common_pb2.GeoPoint(lat=51.2797, lon=1.0830)),
        "premises_type": text("commercial"),
        "victim": text("person-9001"),
        "victim_vulnerable": common_pb2.Value(boolean=False),
    }
)
opened = cases.OpenCase(
    cases_pb2.OpenCaseRequest(
        case_type="burglary",
        case_file=report,
        context=common_pb2.CommandContext(command_id="py-open-1", reason="reported online"),
    ),
    metadata=auth(handler_token),
)
# A retry with the same command id is the same case, nothing appended.
again = cases.OpenCase(
    cases_pb2.OpenCaseRequest(
        case_type="burglary",
        case_file=report,
        context=common_pb2.CommandContext(command_id="py-open-1", reason="reported online"),
    ),
    metadata=auth(handler_token),
)
assert again.case_id == opened.case_id and again.version == opened.version, (opened, again)

cases.CompleteTask(
    cases_pb2.CompleteTaskRequest(
        case_id=opened.case_id,
        item=cases_pb2.ItemRef(key="record_report"),
        outputs=common_pb2.CaseFile(fields={"offenders_on_scene": common_pb2.Value(boolean=False)}),
    ),
    metadata=auth(handler_token),
)

# The worker: lease the GIS lookup, answer it.
jobs = workers.ActivateJobs(
    workers_pb2.ActivateJobsRequest(
        service="gis.locate", worker="py-gis", max_jobs=5, lease_ms=30000, wait_ms=10000
    ),
    metadata=auth(worker_token),
).jobs
mine = [j for j in jobs if j.handle.case_id == opened.case_id]
assert len(mine) == 1, jobs
point = mine[0].input.fields["point"].geo_point
assert abs(point.lat - 51.2797) < 1e-9, point
workers.CompleteJob(
    workers_pb2.CompleteJobRequest(
        handle=mine[0].handle,
        output=common_pb2.CaseFile(fields={"ward": text("Northgate"), "beat": text("N2")}),
    ),
    metadata=auth(worker_token),
)

# Read the case back once the ward has arrived.
deadline = time.time() + 15
while True:
    view = cases.GetCase(
        cases_pb2.GetCaseRequest(case_id=opened.case_id, purpose="python client test"),
        metadata=auth(handler_token),
    )
    ward = view.case_file.fields.get("ward")
    if ward is not None:
        assert ward.text == "Northgate", ward
        break
    if time.time() > deadline:
        sys.exit("the ward never arrived: %s" % view)
    time.sleep(0.05)
assert view.status == cases_pb2.ACTIVE, view.status
assert view.case_file.fields["premises_type"].text == "commercial"

# Unknown cases are NOT_FOUND.
try:
    cases.GetCase(cases_pb2.GetCaseRequest(case_id="burglary-none"), metadata=auth(handler_token))
    sys.exit("an unknown case was answered")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()

print("python client: ok", opened.case_id)
