#!/usr/bin/env python3
"""Reads a TensorBoard log directory with TensorBoard's own code and prints what it sees.

Used by `tests/tensorboard.rs` and handy by hand:

    pip install tensorboard          # TensorFlow is not needed
    python3 tools/tb_check.py runs/<experiment> [--allow-truncated-tail]

Nothing here parses event files itself, so a file that passes is one TensorBoard reads:
  * framing and CRCs: TensorBoard's record reader (tensorflow_stub PyRecordReader_New);
  * content: the event multiplexer and data provider the TensorBoard server uses, which
    convert scalars, images and text to tensors exactly as the dashboards get them;
  * HParams: the HParams plugin's own HTTP routes (/experiment, /session_groups), called
    through werkzeug's test client, i.e. the table the dashboard shows.

    python3 tools/tb_check.py runs/<experiment>/tb   # run names as `--logdir` there shows them

Output (stdout, JSON): {"run_selector": [RUN...], "runs": {RUN: {"files": [{name, records,
truncated_tail, stored_steps: {TAG: [step...]}}], "scalars": {TAG: [[step, value]]},
"images": {TAG: [{step, width, height, decoded: {size, mode, pixel_sum}}]},
"text": {TAG: [[step, text]]}, "hparams": {session_start_info, session_end_info,
experiment}}}, "experiment": ..., "session_groups": [{name, hparams, metrics, status}]}.
`run_selector` is the list TensorBoard's run selector shows (the core plugin's /data/runs,
in its order: by first event time, then name); a session group's name is its run's.
RUN is the directory relative to LOGDIR ("." for LOGDIR itself). `stored_steps` is what
the files hold; `scalars` is what the dashboard shows after TensorBoard's own purging of
points orphaned by a restart (SessionLog START), so comparing them shows whether a
resumed run's files themselves are clean.

Exit status: 0 read fine; 2 usage or no event files; 3 a corrupt file (bad CRC,
undecodable event, or a torn last record without --allow-truncated-tail); 4 tensorboard
is not importable.
"""

import argparse
import io
import json
import logging
import os
import sys


def die(code, msg):
    print("tb_check: " + msg, file=sys.stderr)
    sys.exit(code)


try:
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    from google.protobuf import json_format
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors as tb_errors
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_records
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.core import core_plugin
    from tensorboard.plugins.hparams import hparams_plugin
    from tensorboard.plugins.hparams import metadata as hp_meta
    from tensorboard.plugins.scalar import scalars_plugin
    from tensorboard.util import tensor_util
    from werkzeug import test as wz_test
    from werkzeug import wrappers as wz_wrappers
except Exception as e:  # environment problem, not a log problem
    die(4, "cannot import tensorboard (%s); run `pip install tensorboard`" % e)


def find_runs(logdir):
    """Directories holding event files, as run names relative to logdir."""
    runs = {}
    for root, _dirs, files in os.walk(logdir):
        events = sorted(f for f in files if "tfevents" in f)
        if events:
            runs[os.path.relpath(root, logdir)] = [os.path.join(root, f) for f in events]
    return dict(sorted(runs.items()))


def check_file(path, allow_truncated_tail):
    """Reads every record with TensorBoard's reader; returns a summary or exits 3."""
    reader = tb_records.PyRecordReader_New(path)
    records, truncated = 0, False
    stored = {}  # tag -> steps, in file order: what any reader replays, before any purge
    while True:
        try:
            reader.GetNext()
        except tb_errors.OutOfRangeError:
            break
        except tb_errors.DataLossError as e:
            if "truncated" in str(e) and allow_truncated_tail:
                truncated = True
                break
            die(3, "%s: record %d: %s" % (path, records, e))
        try:
            event = event_pb2.Event.FromString(reader.record())
        except Exception as e:
            die(3, "%s: record %d is not an Event: %s" % (path, records, e))
        for value in event.summary.value:
            stored.setdefault(value.tag, []).append(event.step)
        records += 1
    return {
        "name": os.path.basename(path),
        "records": records,
        "truncated_tail": truncated,
        "stored_steps": stored,
    }


def value_json(v):
    """A google.protobuf.Value as plain JSON."""
    return json_format.MessageToDict(v)


def decode_png(data):
    from PIL import Image  # a dependency of the tensorboard package

    img = Image.open(io.BytesIO(data))
    img.load()
    pixel_sum = sum(sum(p) if isinstance(p, tuple) else p for p in img.getdata())
    return {"format": img.format, "size": list(img.size), "mode": img.mode, "pixel_sum": pixel_sum}


def read_run(acc):
    out = {"scalars": {}, "images": {}, "text": {}, "hparams": {}, "other": {}}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events = acc.Tensors(tag)
        if plugin == "scalars":
            out["scalars"][tag] = [
                [e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())] for e in events
            ]
        elif plugin == "images":
            items = []
            for e in events:
                # data_compat stores [width, height, encoded image...] as strings.
                parts = list(tensor_util.make_ndarray(e.tensor_proto).flat)
                items.append({
                    "step": e.step,
                    "width": int(parts[0]),
                    "height": int(parts[1]),
                    "decoded": decode_png(parts[2]),
                })
            out["images"][tag] = items
        elif plugin == "text":
            out["text"][tag] = [
                [e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode("utf-8")]
                for e in events
            ]
        elif plugin != "hparams":
            out["other"][tag] = {"plugin": plugin, "count": len(events)}
    for tag, content in acc.PluginTagToContent("hparams").items():
        if tag == hp_meta.SESSION_START_INFO_TAG:
            info = hp_meta.parse_session_start_info_plugin_data(content)
            out["hparams"]["session_start_info"] = {
                k: value_json(v) for k, v in info.hparams.items()
            }
        elif tag == hp_meta.SESSION_END_INFO_TAG:
            info = hp_meta.parse_session_end_info_plugin_data(content)
            out["hparams"]["session_end_info"] = json_format.MessageToDict(info)
        elif tag == hp_meta.EXPERIMENT_TAG:
            exp = hp_meta.parse_experiment_plugin_data(content)
            out["hparams"]["experiment"] = {
                "hparam_infos": [
                    {
                        "name": h.name,
                        "type": json_format.MessageToDict(h).get("type"),
                        "domain_discrete": [value_json(v) for v in h.domain_discrete.values]
                        if h.HasField("domain_discrete") else None,
                    }
                    for h in exp.hparam_infos
                ],
                "metric_tags": [m.name.tag for m in exp.metric_infos],
            }
    return out


def context(logdir, mux):
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    return base_plugin.TBContext(logdir=logdir, multiplexer=mux, data_provider=provider)


def run_selector(logdir, mux):
    """The run names TensorBoard's run selector lists: the core plugin's /data/runs."""
    apps = core_plugin.CorePlugin(context(logdir, mux)).get_plugin_apps()
    client = wz_test.Client(apps["/data/runs"], wz_wrappers.Response)
    resp = client.get("/data/runs")
    if resp.status_code != 200:
        die(3, "/data/runs: HTTP %d: %s" % (resp.status_code, resp.get_data(True)))
    return json.loads(resp.get_data(True))


def hparams_dashboard(logdir, mux):
    """The HParams plugin's answers, as its dashboard requests them."""
    ctx = context(logdir, mux)
    scalars = scalars_plugin.ScalarsPlugin(ctx)
    ctx.plugin_name_to_instance = {"scalars": scalars}
    plugin = hparams_plugin.HParamsPlugin(ctx)
    apps = plugin.get_plugin_apps()

    def post(route, body):
        client = wz_test.Client(apps[route], wz_wrappers.Response)
        resp = client.post(route, data=json.dumps(body), content_type="application/json")
        if resp.status_code != 200:
            die(3, "hparams %s: HTTP %d: %s" % (route, resp.status_code, resp.get_data(True)))
        return json.loads(resp.get_data(True))

    experiment = post("/experiment", {"experimentName": ""})
    groups = post("/session_groups", {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": h["name"]} for h in experiment.get("hparamInfos", [])]
        + [{"metric": m["name"]} for m in experiment.get("metricInfos", [])],
        "startIndex": 0,
        "sliceSize": 1000,
    })
    return experiment, [
        {
            "name": g.get("name"),
            "hparams": g.get("hparams", {}),
            "metrics": {m["name"].get("tag"): m.get("value") for m in g.get("metricValues", [])},
            "status": [s.get("status") for s in g.get("sessions", [])],
        }
        for g in groups.get("sessionGroups", [])
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logdir")
    ap.add_argument("--allow-truncated-tail", action="store_true",
                    help="a torn last record (writer killed) is not an error")
    args = ap.parse_args()
    if not os.path.isdir(args.logdir):
        die(2, "%s is not a directory" % args.logdir)
    runs = find_runs(args.logdir)
    if not runs:
        die(2, "no event files under %s" % args.logdir)

    result = {"runs": {}}
    for name, files in runs.items():
        result["runs"][name] = {
            "files": [check_file(f, args.allow_truncated_tail) for f in files]
        }

    mux = pem.EventMultiplexer(size_guidance={"tensors": 0, "scalars": 0, "images": 0})
    mux.AddRunsFromDirectory(args.logdir)
    mux.Reload()
    for name in runs:
        result["runs"][name].update(read_run(mux.GetAccumulator(name)))

    result["run_selector"] = run_selector(args.logdir, mux)
    result["experiment"], result["session_groups"] = hparams_dashboard(args.logdir, mux)
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
