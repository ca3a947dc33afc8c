"""Training on several processes (issue #18, item 3): toy-size `xdyna train` runs launched as 2
CPU processes (gloo) by `accelerate launch`, against 1-process runs of the same global batch.

Each run writes ``trace/rank-<r>.jsonl`` (config ``trace: true``): per optimiser step, the item
keys each process read and a SHA-256 of its trained weights. Proven here:

- each process reads its own items, and together exactly the items of the 1-process run;
- the weights are bit-identical on both processes after every step;
- 2 steps + resume to 4 ends with the same bytes as 4 steps straight;
- 2 processes x batch 1 == 1 process x 2 accumulated micro-batches of 1, bit for bit (losses
  and weights, with a warm-up + cosine LR schedule); 1 process x batch 2 matches to rounding
  (batched kernels and the batch mean add in another order): losses within 1e-5 relative.

Several processes on a CPU-only machine: ``accelerate launch --multi_gpu`` starts them (torch's
launcher) and ``device: cpu`` makes accelerate join them with gloo. (``accelerate launch --cpu
--num_processes 2`` starts ONE process: accelerate's multi-CPU path expects mpirun.)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_train import TINY, H, W, base_config

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
TIMEOUT = 300  # s per run: a hang (processes waiting for each other) fails instead of blocking


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(config: Path, out: Path, processes: int, *args: str) -> str:
    """`xdyna train` as `processes` CPU processes; returns its output (stdout + stderr)."""
    cmd = [sys.executable, "-m", "xdyna_core.cli", "train"]
    if processes > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "xdyna_core.cli", "train"]
    cmd += ["--config", str(config), "--output", str(out), "--quiet", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))  # this checkout's xdyna_core
    try:
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"`{' '.join(cmd)}` still running after {TIMEOUT} s (processes waiting for each other?)\n"
                    f"{(err.stdout or b'')[-3000:]!r}\n{(err.stderr or b'')[-3000:]!r}")
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"`{' '.join(cmd)}` failed:\n{output[-5000:]}"
    return output


def trace(out: Path) -> dict:
    """{rank: [line per step]} from a run's trace files."""
    lines = {}
    for f in sorted((out / "trace").glob("rank-*.jsonl")):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        lines[rows[0]["rank"]] = rows
    return lines


def model_bytes(out: Path) -> dict:
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted((out / "model").rglob("*.safetensors"))}


def model_tensors(out: Path) -> dict:
    tensors = {}
    for f in sorted((out / "model").rglob("*.safetensors")):
        tensors.update({f"{f.parent.name}.{k}": v for k, v in load_file(str(f)).items()})
    return tensors


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 from a fresh tiny model: 2 processes x batch 1 (checkpoint at step 2), the same
    resumed from that checkpoint on 2 processes and on 1 process x batch 2, 1 process x 2
    accumulated micro-batches of 1, 1 process x batch 2; and stage 0 (VAE phase under a
    wall-time budget, then the backbone) on 2 processes."""
    from xdyna_core.train.trainer import build_tiny_stage0, inflate_stage0, make_pipeline

    tmp = tmp_path_factory.mktemp("dist")
    make_pipeline(inflate_stage0(build_tiny_stage0(H, W, 3, TINY), TINY)).save_pretrained(
        str(tmp / "model"), safe_serialization=True)
    # A warm-up + cosine schedule: a schedule advanced per process (not per step) shows in the losses.
    cfg = base_config(tmp / "unused", "1", pretrained_model=str(tmp / "model"), max_steps=STEPS,
                      checkpointing_steps=2, checkpoints_total_limit=3, lr_scheduler="cosine", lr_warmup_steps=1,
                      trace=True).to_dict()
    (tmp / "stage1.yaml").write_text(yaml.safe_dump(cfg))
    cfg0 = base_config(tmp / "unused", "0", max_steps=STEPS, checkpointing_steps=0, trace=True,
                       **{"stage0.vae_steps": 3, "stage0.vae_minutes": 0.001}).to_dict()
    (tmp / "stage0.yaml").write_text(yaml.safe_dump(cfg0))
    c1, c0 = tmp / "stage1.yaml", tmp / "stage0.yaml"
    logs = {}

    def two_then_resumed():
        logs["two"] = train(c1, tmp / "two", 2)
        # "interrupted" after step 2: only that checkpoint survives
        ckpt = tmp / "two" / "checkpoints" / "checkpoint-0000002"
        shutil.copytree(ckpt, tmp / "resumed" / "checkpoints" / ckpt.name)
        logs["resumed"] = train(c1, tmp / "resumed", 2, "--resume", "latest")
        # and on 1 process with the same global batch (batch 2)
        shutil.copytree(ckpt, tmp / "resumed_one" / "checkpoints" / ckpt.name)
        logs["resumed_one"] = train(c1, tmp / "resumed_one", 1, "--resume", "latest", "--set", "train_batch_size=2")

    def the_others():
        logs["accumulated"] = train(c1, tmp / "accumulated", 1, "--set", "gradient_accumulation_steps=2")
        logs["batch"] = train(c1, tmp / "batch", 1, "--set", "train_batch_size=2")
        logs["stage0"] = train(c0, tmp / "stage0", 2)

    with ThreadPoolExecutor(2) as pool:  # two lines of runs side by side (the machine has 2 cores)
        for job in [pool.submit(two_then_resumed), pool.submit(the_others)]:
            job.result()
    return tmp, logs


def test_each_process_reads_its_own_items(runs):
    tmp, logs = runs
    two, one = trace(tmp / "two"), trace(tmp / "accumulated")
    assert sorted(two) == [0, 1] and [r["step"] for r in two[0]] == [r["step"] for r in two[1]] == list(range(STEPS))
    seen = set()
    for step in range(STEPS):
        k0 = [k for micro in two[0][step]["keys"] for k in micro]
        k1 = [k for micro in two[1][step]["keys"] for k in micro]
        assert len(k0) == len(k1) == 1 and not set(k0) & set(k1), step  # disjoint
        # together: the items the 1-process run reads at that step (same global batch)
        assert sorted(k0 + k1) == sorted(k for micro in one[0][step]["keys"] for k in micro), step
        assert not seen & set(k0 + k1)  # and never an item twice
        seen |= set(k0 + k1)
    batch = trace(tmp / "batch")[0]
    assert [sorted(sum(r["keys"], [])) for r in batch] == [sorted(sum(r["keys"], [])) for r in one[0]]
    # each process says what it did, once
    for r, keys in ((0, "0, 2, 4, 6"), (1, "1, 3, 5, 7")):
        line = f"[process {r}/2] stage1: trained steps 0..3 on 4 items of its own (keys {keys})"
        assert logs["two"].count(line) == 1, logs["two"][-3000:]
    assert logs["two"].count("stage 1 done") == 1  # the closing line from the main process only


def test_weights_identical_on_all_processes_after_every_step(runs):
    tmp, _ = runs
    for run, phases in (("two", {"stage1"}), ("stage0", {"vae", "backbone"})):
        t = trace(tmp / run)
        assert sorted(t) == [0, 1]
        assert [(r["step"], r["phase"]) for r in t[0]] == [(r["step"], r["phase"]) for r in t[1]], run
        assert {r["phase"] for r in t[0]} == phases and [r["step"] for r in t[0]] == list(range(STEPS))
        for a, b in zip(t[0], t[1]):
            assert a["weights_sha256"] == b["weights_sha256"], (run, a["step"])
            assert a["keys"] != b["keys"] and a["loss"] != b["loss"]  # different items, different losses
        hashes = [r["weights_sha256"] for r in t[0]]
        assert len(set(hashes)) == len(hashes), run  # the weights move every step
    # stage 0's VAE phase ran out of its 0.06 s budget: both processes stopped it at the same step
    # (each process reads its own clock: the main process decides)
    vae_steps = sum(r["phase"] == "vae" for r in trace(tmp / "stage0")[0])
    assert 1 <= vae_steps < 3
    summary = json.loads((tmp / "stage0" / "summary.json").read_text())
    assert summary["phases"]["vae"]["steps"] == vae_steps


def test_checkpoint_and_resume_on_two_processes_is_exact(runs):
    tmp, logs = runs
    ckpt = tmp / "two" / "checkpoints" / "checkpoint-0000002"
    assert {f.name for f in ckpt.iterdir()} >= {"model.safetensors", "optimizer.bin", "scheduler.bin",
                                                "random_states_0.pkl", "random_states_1.pkl", "trainer_state.json"}
    assert "[process 1/2] resumed from" in logs["resumed"] and "[process 0/2] resumed from" in logs["resumed"]
    full, resumed = trace(tmp / "two"), trace(tmp / "resumed")
    for r in (0, 1):
        assert [x["step"] for x in resumed[r]] == [2, 3]
        assert [(x["keys"], x["weights_sha256"]) for x in resumed[r]] == [(x["keys"], x["weights_sha256"])
                                                                          for x in full[r][2:]]
    losses = json.loads((tmp / "resumed" / "losses.json").read_text())
    assert losses == json.loads((tmp / "two" / "losses.json").read_text())
    assert model_bytes(tmp / "resumed") == model_bytes(tmp / "two")  # bit-identical final weights


def test_resume_on_another_number_of_processes_with_the_same_global_batch(runs):
    """A 2-process checkpoint resumed on 1 process x batch 2 reads the same items with the same
    noise; a different global batch is refused."""
    from xdyna_core.errors import InputError
    from xdyna_core.train.config import load_config
    from xdyna_core.train.trainer import Trainer

    tmp, _ = runs
    two, one = trace(tmp / "two"), trace(tmp / "resumed_one")[0]
    assert [r["step"] for r in one] == [2, 3]
    for r in one:
        assert sorted(r["keys"][0]) == sorted(two[0][r["step"]]["keys"][0] + two[1][r["step"]]["keys"][0])
    a = json.loads((tmp / "resumed_one" / "losses.json").read_text())
    b = json.loads((tmp / "two" / "losses.json").read_text())
    assert a[:2] == b[:2]  # from the checkpoint
    torch.testing.assert_close(torch.tensor([l[2] for l in a[2:]]), torch.tensor([l[2] for l in b[2:]]),
                               rtol=1e-5, atol=0)
    ckpt = tmp / "two" / "checkpoints" / "checkpoint-0000002"
    def resume(**over):
        cfg = load_config(str(tmp / "stage1.yaml"), dict(over, output_dir=str(tmp / "other")))
        return Trainer(cfg, resume=str(ckpt), progress_bar=False, log=lambda *_: None)

    assert resume(gradient_accumulation_steps=2).state["step"] == 2  # 1 process x 2 x 1 item: allowed
    for over in ({"train_batch_size": 3}, {"train_batch_size": 2, "gradient_accumulation_steps": 2}):
        with pytest.raises(InputError, match="global batch"):
            resume(**over)


def test_same_global_batch_same_training_on_one_or_two_processes(runs):
    tmp, _ = runs
    losses = {k: json.loads((tmp / k / "losses.json").read_text()) for k in ("two", "accumulated", "batch")}
    assert [l[0] for l in losses["two"]] == list(range(STEPS))
    # 2 processes x 1 item == 1 process x 2 accumulated micro-batches of 1 item: the same items,
    # the same noise (drawn from each item's key), the same arithmetic (a gradient summed from
    # two halves in either order): bit-identical
    assert losses["two"] == losses["accumulated"]
    assert model_bytes(tmp / "two") == model_bytes(tmp / "accumulated")
    two, one = trace(tmp / "two"), trace(tmp / "accumulated")
    assert [r["weights_sha256"] for r in two[0]] == [r["weights_sha256"] for r in one[0]]
    # 1 process x batch 2: the same items and noise, but batched kernels and the loss mean over
    # two items round differently: equal to float32 rounding
    torch.testing.assert_close(torch.tensor([l[2] for l in losses["batch"]]),
                               torch.tensor([l[2] for l in losses["two"]]), rtol=1e-5, atol=0)
    a, b = model_tensors(tmp / "two"), model_tensors(tmp / "batch")
    assert a.keys() == b.keys()
    for k in a:  # lr 1e-3, 4 steps: rounding moves weights by far less than one step
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4, msg=k)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # (so the comparison above is not vacuous)
