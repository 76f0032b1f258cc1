"""DPO and ORPO on the tiny model: the losses at the start, against a direct computation,
the masks, learning a held-out preference, and resuming after kill -9 with the same losses."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest

from .conftest import write_jsonl

pytestmark = pytest.mark.timeout(180)

TRAIN_TOPICS = [
    "apples",
    "rivers",
    "music",
    "trains",
    "winter",
    "cats",
    "books",
    "the sea",
    "bread",
    "clocks",
    "gardens",
    "stars",
]
HELD_OUT_TOPICS = ["dogs", "summer", "tea", "bikes", "rain", "maps", "songs", "hills"]


def pair(topic: str, line: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Tell me about {topic}.", "trainable": False},
            {"role": "assistant", "content": f"I think {topic} are fine.", "trainable": True},
        ],
        "rejected": {
            "role": "assistant",
            "content": f"I think {topic} are awful.",
            "trainable": True,
        },
        "line": line,
    }


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pairs")
    train = write_jsonl(root / "train.jsonl", [pair(t, i + 1) for i, t in enumerate(TRAIN_TOPICS)])
    held = write_jsonl(
        root / "valid.jsonl", [pair(t, i + 1) for i, t in enumerate(HELD_OUT_TOPICS)]
    )
    return train, held


DPO = {
    "preference": {"method": "dpo", "beta": 0.1},
    "hyperparameters": {"max_steps": 30, "batch_size": 4, "learning_rate": 0.01},
    "report_interval_steps": 1,
}


def dpo_config(make_config, pair_files, name="dpo", validation=True, **overrides):
    train, held = pair_files
    settings = {**DPO, **overrides}
    return make_config(
        name, train_path=str(train), validation_path=str(held) if validation else None, **settings
    )


@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "full"])
def test_dpo_loss_at_step_zero_is_ln2_for_every_method(make_config, run_worker, pair_files, method):
    overrides = {"method": method, "hyperparameters": {**DPO["hyperparameters"], "max_steps": 2}}
    if method == "full":
        overrides["hyperparameters"]["learning_rate"] = 0.0005
    if method == "qlora":
        overrides["quantization"] = {"bits": 8, "group_size": 32}
    worker = run_worker(dpo_config(make_config, pair_files, method, validation=False, **overrides))
    assert worker.returncode == 0, worker.log()
    first = worker.of_type("metrics")[0]
    assert first.step == 1 and math.isclose(first.loss, math.log(2), abs_tol=2e-4), first
    assert math.isclose(first.preference.reward_margin, 0.0, abs_tol=2e-3)
    logs = [e.message for e in worker.of_type("log")]
    assert any("reference log-probabilities computed for 12 pairs" in m for m in logs), logs


def evaluations(worker) -> dict[int, object]:
    return {e.step: e for e in worker.of_type("evaluation")}


@pytest.mark.parametrize(
    "preference",
    [
        {"method": "dpo", "beta": 0.1},
        {"method": "dpo", "beta": 0.1, "loss": "ipo"},
        {"method": "dpo", "beta": 0.1, "loss": "hinge"},
        {"method": "orpo", "orpo_lambda": 0.5},
    ],
)
def test_reward_accuracy_on_held_out_pairs_rises_from_half_to_at_least_0_9(
    make_config, run_worker, pair_files, preference
):
    config = dpo_config(
        make_config, pair_files, preference=preference, evaluation={"interval_steps": 10}
    )
    worker = run_worker(config)
    assert worker.returncode == 0, worker.log()
    evals = evaluations(worker)
    assert sorted(evals) == [0, 10, 20, 30]
    print(
        {
            s: (
                round(e.validation_loss, 4),
                e.preference.reward_accuracy,
                round(e.preference.reward_margin, 4),
            )
            for s, e in evals.items()
        }
    )
    start, end = evals[0].preference, evals[30].preference
    if preference["method"] == "dpo":
        assert start.reward_accuracy == 0.5 and start.reward_margin == 0.0
    assert end.reward_accuracy >= 0.9 and end.reward_margin > start.reward_margin
    assert evals[30].validation_loss < evals[0].validation_loss
    # The best checkpoint is the one of the lowest validation loss.
    best = [c for c in worker.of_type("checkpoint") if c.best]
    lowest = min((e for s, e in evals.items() if s), key=lambda e: e.validation_loss)
    assert best and best[-1].step == lowest.step


@pytest.mark.parametrize("preference", [{"method": "dpo", "sft_weight": 0.5}, {"method": "orpo"}])
def test_resume_after_kill_9_continues_with_identical_losses_without_recomputing_the_reference(
    make_config, run_worker, start_worker, pair_files, preference
):
    settings = {
        "preference": preference,
        "lora": {"dropout": 0.1},  # draws from the RNG the checkpoint restores
        "hyperparameters": {
            "max_steps": 12,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "learning_rate": 0.01,
            "learning_rate_schedule": "cosine",
            "warmup_steps": 2,
            "seed": 5,
        },
        "checkpointing": {"interval_steps": 4},
    }
    straight = run_worker(dpo_config(make_config, pair_files, "straight", False, **settings))
    assert straight.done().outcome == "succeeded", straight.log()

    config = dpo_config(make_config, pair_files, "killed", False, **settings)
    killed = start_worker(config)
    saved = killed.wait_for(lambda e: e.kind == "checkpoint" and e.step == 4)
    killed.wait_for(lambda e: e.kind == "metrics" and e.step == 5)
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait()

    resumed = run_worker(config, resume_from=saved.path)
    assert resumed.done().outcome == "succeeded", resumed.log()
    want = {s: v for s, v in straight.losses().items() if s > 4}
    got = resumed.losses()
    assert got.keys() == want.keys()
    for step, loss in got.items():
        assert math.isclose(loss, want[step], rel_tol=1e-5, abs_tol=1e-7), (step, loss, want[step])
    logs = [e.message for e in resumed.of_type("log")]
    if preference["method"] == "dpo":
        assert any("reference log-probabilities loaded for 12 pairs" in m for m in logs), logs
        saved_file = json.loads((Path(config.job_dir) / "reference_logps.json").read_text())
        assert len(saved_file["logps"]["train"]) == 12
    else:
        assert not any("reference" in m for m in logs)


# --- The loss against a direct computation, in this process ---------------------------------


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def direct_pair_loss(pc, pr, rc, rr, nc, nr, s) -> float:
    """The loss of one pair written out from the papers, in float64."""
    if s.method == "orpo":
        mc, mr = pc / nc, pr / nr
        log_odds = (mc - mr) - (math.log1p(-math.exp(mc)) - math.log1p(-math.exp(mr)))
        return -mc - s.orpo_lambda * _logsigmoid(log_odds)
    margin = (pc - rc) - (pr - rr)
    if s.loss == "ipo":
        loss = (margin - 1 / (2 * s.beta)) ** 2
    elif s.loss == "hinge":
        loss = max(0.0, 1 - s.beta * margin)
    else:
        ls = s.label_smoothing
        loss = -(1 - ls) * _logsigmoid(s.beta * margin) - ls * _logsigmoid(-s.beta * margin)
    return loss + s.sft_weight * (-pc / nc)


@pytest.fixture(scope="module")
def policy(tiny_model_dir, pair_files, tmp_path_factory):
    """The tiny model with LoRA whose B matrices are random (so policy differs from base)
    and one batch of 4 pairs (8 rows)."""
    import mlx.core as mx

    from tunewire.client.spec import spec_from_dict
    from tunewire.trainer.jobs import handoff
    from tunewire.trainer.worker.logprobs import output_head
    from tunewire.trainer.worker.model_setup import setup_model
    from tunewire.trainer.worker.preference_data import collate_pairs, load_pairs

    from .conftest import BASE_SPEC, merged

    train, _ = pair_files
    spec = spec_from_dict(merged(BASE_SPEC, {"preference": {"method": "dpo"}}))
    spec.model, spec.dataset.path = str(tiny_model_dir), str(train)
    job_dir = tmp_path_factory.mktemp("direct")
    config = handoff.config_from_spec(spec, job_id="direct", job_dir=job_dir, train_path=train)
    loaded, _, _ = setup_model(config)
    mx.random.seed(7)
    for _, module in loaded.model.named_modules():
        if "lora_b" in module:
            module.lora_b = 0.05 * mx.random.normal(module.lora_b.shape)
    output_head(loaded.model)  # found before any tracing, as the loop does
    data = load_pairs(train, loaded.tokenizer, 64)
    batch = collate_pairs(data.records, [0, 3, 5, 9], 0, 1, 64)
    return loaded, batch


def row_logp(model, tokens, mask):
    """One row's log-probability, by gathering each target's log-softmax (no cross_entropy)."""
    import mlx.core as mx

    logits = model(tokens[None, :-1])[0].astype(mx.float32)
    logsm = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    picked = mx.take_along_axis(logsm, tokens[1:, None], axis=-1)[:, 0]
    return (picked * mask[1:]).sum()


@pytest.mark.parametrize(
    "settings",
    [
        dict(method="dpo", beta=0.1, loss="sigmoid", label_smoothing=0.0, sft_weight=0.0),
        dict(method="dpo", beta=0.5, loss="sigmoid", label_smoothing=0.2, sft_weight=0.3),
        dict(method="dpo", beta=0.1, loss="ipo", label_smoothing=0.0, sft_weight=0.0),
        dict(method="dpo", beta=0.3, loss="hinge", label_smoothing=0.0, sft_weight=0.0),
        dict(
            method="orpo",
            beta=0.0,
            loss="sigmoid",
            label_smoothing=0.0,
            sft_weight=0.0,
            orpo_lambda=0.4,
        ),
    ],
)
def test_loss_and_gradient_match_a_direct_computation(policy, settings):
    import mlx.core as mx
    import numpy as np
    from mlx import nn
    from mlx.utils import tree_flatten

    from tunewire.trainer.protocol.config import PreferenceSettings
    from tunewire.trainer.worker.logprobs import trained_positions
    from tunewire.trainer.worker.preference_loss import preference_loss

    s = PreferenceSettings(**{"orpo_lambda": 0.0, **settings})
    loaded, batch = policy
    model = loaded.model
    model.eval()  # no dropout: the two computations see the same function
    tokens, mask = mx.array(batch.tokens), mx.array(batch.mask)
    pairs = tokens.shape[0] // 2
    reference = mx.array([[-20.0 - i, -22.0 + 0.5 * i] for i in range(pairs)], mx.float32)
    normalizer = mx.array(float(pairs))

    positions = trained_positions(batch.tokens, batch.mask).arrays()
    (loss, sums), grad = nn.value_and_grad(model, preference_loss)(
        model, tokens, positions, reference, normalizer, s
    )

    # Directly: each row's log-prob and its gradient alone, combined by the chain rule
    # with dL/dlogp from central differences of the float64 formula.
    row_grad = nn.value_and_grad(model, row_logp)
    logps, grads = [], []
    for row in range(2 * pairs):
        value, g = row_grad(model, tokens[row], mask[row])
        logps.append(value.item())
        grads.append(dict(tree_flatten(g)))
    lengths = batch.mask[:, 1:].sum(axis=1).astype(float)
    ref = np.array(reference.tolist())

    def total(lp):
        return (
            sum(
                direct_pair_loss(
                    lp[i], lp[pairs + i], ref[i, 0], ref[i, 1], lengths[i], lengths[pairs + i], s
                )
                for i in range(pairs)
            )
            / pairs
        )

    assert math.isclose(loss.item(), total(logps), rel_tol=1e-4, abs_tol=1e-5)
    assert math.isclose(sums[0].item() / pairs, total(logps), rel_tol=1e-4, abs_tol=1e-5)
    eps = 1e-3
    weights = []
    for j in range(2 * pairs):
        up, down = list(logps), list(logps)
        up[j] += eps
        down[j] -= eps
        weights.append((total(up) - total(down)) / (2 * eps))
    got = dict(tree_flatten(grad))
    assert got.keys() == grads[0].keys() and got
    for name, value in got.items():
        want = sum(w * np.array(g[name]) for w, g in zip(weights, grads))
        scale = max(np.abs(want).max(), 1e-6)
        assert np.abs(np.array(value) - want).max() <= 2e-3 * scale, name


def test_only_the_reply_tokens_of_each_side_are_trained(policy, tiny_model_dir):
    loaded, batch = policy
    tokenizer = loaded.tokenizer
    pairs = batch.tokens.shape[0] // 2
    for row in range(2 * pairs):
        trained = [t for t, m in zip(batch.tokens[row], batch.mask[row]) if m]
        text = tokenizer.decode(trained)
        word = "fine" if row < pairs else "awful"
        assert text.startswith("I think ") and text.endswith(f" are {word}.<|im_end|>\n"), text
        prompt = tokenizer.decode([t for t, m in zip(batch.tokens[row], batch.mask[row]) if not m])
        assert "Tell me about" in prompt and "I think" not in prompt


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_with_the_adapters_off_the_model_is_the_base(tiny_model_dir, pair_files, tmp_path, method):
    """What a resumed job without its reference file computes the reference with."""
    import mlx.core as mx
    from mlx_lm import load

    from tunewire.client.spec import spec_from_dict
    from tunewire.trainer.jobs import handoff
    from tunewire.trainer.worker.logprobs import trained_positions
    from tunewire.trainer.worker.model_setup import setup_model
    from tunewire.trainer.worker.preference_data import collate_pairs, load_pairs
    from tunewire.trainer.worker.preference_loss import sequence_logps
    from tunewire.trainer.worker.preference_reference import base_model

    from .conftest import BASE_SPEC, merged

    train, _ = pair_files
    # The float32 base exactly (not rounded to bfloat16 as the CPU's light weights do), to
    # compare with mlx-lm's own load of it.
    exact = {"half_precision_frozen_weights": False}
    overrides = {"method": method, "preference": {"method": "dpo"}, "hyperparameters": exact}
    spec = spec_from_dict(merged(BASE_SPEC, overrides))
    spec.model, spec.dataset.path = str(tiny_model_dir), str(train)
    config = handoff.config_from_spec(spec, job_id="off", job_dir=tmp_path, train_path=train)
    loaded, _, _ = setup_model(config)
    mx.random.seed(3)
    for _, module in loaded.model.named_modules():  # a trained adapter: B and magnitude moved
        if "lora_b" in module:
            module.lora_b = 0.05 * mx.random.normal(module.lora_b.shape)
            if "m" in module:
                module.m = module.m * 1.1
    batch = collate_pairs(load_pairs(train, loaded.tokenizer, 64).records, [0, 1], 0, 1, 64)
    tokens = mx.array(batch.tokens)
    positions = trained_positions(batch.tokens, batch.mask).arrays()
    loaded.model.eval()
    adapted = sequence_logps(loaded.model, tokens, positions).tolist()
    with base_model(loaded.model):
        off = sequence_logps(loaded.model, tokens, positions).tolist()
    after = sequence_logps(loaded.model, tokens, positions).tolist()
    base, _ = load(str(tiny_model_dir))
    base.set_dtype(mx.float32)
    want = sequence_logps(base, tokens, positions).tolist()
    assert off == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert adapted != pytest.approx(want, rel=1e-3) and after == adapted  # restored on exit
