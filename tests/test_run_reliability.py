"""Issue 21, probing the run and generation commands as a careless user and as an attacker would:
nothing of the user's is overwritten or written through a link, bombs and impossible sizes are
one-line errors before any work, a resumed run trains on the same data, latents stay tied to the
tokenizer that made them, and signals are honoured at once. Each test is named in
docs/reliability.md ("Generation commands" and "Run folders")."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import transvae
from transvae.cli import main
from transvae.data.latents import LatentFolder
from transvae.training import Trainer, build_config, load_checkpoint

NANO = "transvae-nano-f16d32"
QUIET = ["--workers", "0", "--log.progress=false", "--log.tensorboard=false"]
L1_ONLY = ["--loss.lpips_weight=0", "--loss.vf_weight=0", "--loss.gan_weight=0"]


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory, class_photos):
    """Photos, a saved nano tokenizer, its latents, and a second tokenizer of the same name with
    other weights."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("runrel")
    transvae.create_model(NANO).save_pretrained(root / "vae")
    torch.manual_seed(1)
    transvae.create_model(NANO).save_pretrained(root / "other_vae")
    photos = class_photos(root / "photos", n_per_class=4, size=32)
    rc = main(
        ["extract-latents", str(photos), "--model", str(root / "vae"), "--out", str(root / "latents")]
        + ["--resolution", "32", "--batch-size", "8", "--num-workers", "0"]
    )
    assert rc == 0
    return root


def train_args(base: Path, out: Path, *extra) -> list[str]:
    head = ["train", "--model", NANO, "--data", str(base / "photos"), "--out", str(out), "--resolution", "32"]
    return [*head, "--batch-size", "2", "--max-steps", "1", *QUIET, *L1_ONLY, *[str(e) for e in extra]]


def gen_args(base: Path, out: Path, *extra, latents: Path | None = None) -> list[str]:
    head = ["gen-train", "--latents", str(latents or base / "latents"), "--model", "lightningdit-nano-1"]
    tail = ["--out", str(out), "--batch-size", "4", "--max-steps", "2", "--sample.val_num=0", *QUIET]
    return [*head, *tail, *[str(e) for e in extra]]


def sample_args(base: Path, run: Path, out: Path, *extra) -> list[str]:
    """``transvae gen-sample --run RUN --vae BASE/vae --out OUT EXTRA...`` as strings."""
    return ["gen-sample", "--run", str(run), "--vae", str(base / "vae"), "--out", str(out), *map(str, extra)]


def gen_run(base: Path, tmp_path: Path) -> Path:
    """A finished gen-train run with an exported generator (the tokenizer recorded)."""
    run = tmp_path / "genrun"
    assert main(gen_args(base, run)) == 0
    return run


# -- 1. a new run never overwrites a folder that holds something ----------------------------------
@pytest.mark.parametrize("cmd", ["train", "gen-train"])
def test_a_new_run_into_a_folder_that_holds_files_is_refused_and_nothing_changes(base, tmp_path, capsys, cmd):
    for content in ("finished-run", "user-files"):
        out = tmp_path / content
        (out / "model").mkdir(parents=True)
        if content == "finished-run":  # a finished run whose checkpoints/ were deleted to save space
            (out / "config.yaml").write_text("model: {name: x}\n")
            (out / "summary.json").write_text('{"step": 2000}')
            (out / "model" / "config.json").write_text('{"architecture": "transvae"}')
            (out / "model" / "model.safetensors").write_bytes(b"weights of 2000 steps")
        else:
            (out / "notes.txt").write_text("my notes")
        before, names = snapshot(out), sorted(p.name for p in out.iterdir())
        argv = train_args(base, out) if cmd == "train" else gen_args(base, out)
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err)
        assert "already holds" in line and "nothing was changed" in line
        assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == names


def test_only_rank_0_checks_that_a_new_run_folder_is_empty(tmp_path):
    """Under torchrun, rank 0 may already be writing into the new run folder when another rank
    opens it (a clean-clone CI run failed on that race): the emptiness check is rank 0's, and
    torchrun stops every rank when rank 0 refuses."""
    from transvae.training.run_folder import RunFolder, RunFolderError

    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("")  # what rank 0 writes first
    with pytest.raises(RunFolderError, match="already holds"):
        RunFolder.open(out, resume=False, rank=0)
    run, saved = RunFolder.open(out, resume=False, rank=1)
    assert run.path == out and saved is None


# -- 2. nothing is written through a link ----------------------------------------------------------
@pytest.mark.parametrize("entry", [".lock", "metrics.jsonl", "train.log", "model"])
def test_a_link_planted_in_a_run_folder_is_refused_and_its_target_untouched(base, tmp_path, capsys, entry):
    run = tmp_path / "run"
    assert main(train_args(base, run, "--train.checkpoint_every=1")) == 0
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    path = run / entry
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)
    assert main(train_args(base, run, "--resume", "--max-steps", "2")) == 2
    assert "symbolic link" in one_line(capsys.readouterr().err)
    assert target.read_text() == "keep me"


def test_the_run_lock_and_logs_never_follow_a_link(tmp_path):
    from transvae.utils.files import open_nofollow
    from transvae.utils.runlock import RunLock

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(target)
    with pytest.raises(OSError):
        RunLock(tmp_path / "run").acquire()
    (tmp_path / "log").symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        open_nofollow(tmp_path / "log", "a")
    assert target.read_text() == "keep me"


# -- 6. disk full while a checkpoint is written ----------------------------------------------------
@pytest.mark.parametrize("cmd", ["train", "gen-train"])
def test_disk_full_while_writing_a_checkpoint_is_one_line_and_the_old_one_survives(
    base, tmp_path, capsys, monkeypatch, cmd
):
    import transvae.training.checkpoint as ck

    run = tmp_path / "run"
    argv = train_args(base, run, "--train.checkpoint_every=1") if cmd == "train" else gen_args(base, run)
    assert main(argv) == 0
    good = (run / "checkpoints" / "last.pt").read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):  # what torch's zip writer raises when the disk fills (or EFBIG)
        real_save({"partial": torch.zeros(3)}, f)
        raise RuntimeError(
            "[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file data/12: file write failed"
        )

    monkeypatch.setattr(ck.torch, "save", full)
    assert main([*argv, "--resume", "--max-steps", "4"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "disk full" in line and "last.pt" in line
    assert (run / "checkpoints" / "last.pt").read_bytes() == good
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_gen_sample_checks_free_space_before_sampling(base, tmp_path, capsys, monkeypatch):
    import shutil as shutil_module

    run = gen_run(base, tmp_path)
    free = shutil_module.disk_usage(tmp_path).free
    monkeypatch.setattr(
        "transvae.utils.files.shutil.disk_usage",
        lambda p: shutil_module._ntuple_diskusage(free, free - 1000, 1000),
    )
    out = tmp_path / "samples"
    rc = main(sample_args(base, run, out, "--num", 400))
    assert rc == 2 and "not enough free space" in one_line(capsys.readouterr().err)
    assert not list((out / "images").glob("*.png"))


# -- 8, 9, 10, 17. bombs, impossible sizes and values: one line, before work ------------------------
def test_json_and_yaml_bombs_and_endless_files_are_one_line(base, tmp_path, capsys):
    import shutil

    bomb = "[" * 100_000
    run = gen_run(base, tmp_path)
    cases = []
    cfg = run / "model" / "config.json"
    cfg.write_text(bomb)  # a generator's config
    cases.append(sample_args(base, run, tmp_path / "s", "--num", 1))
    for name in ("manifest.json", "extraction.json"):  # a latents folder's records
        lat = tmp_path / f"lat-{name}"
        shutil.copytree(base / "latents", lat)
        (lat / name).write_text(bomb)
        cases.append(gen_args(base, tmp_path / f"g-{name}", latents=lat))
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("train: " + bomb)
    cases.append(train_args(base, tmp_path / "y", "--config", recipe))
    cases.append(train_args(base, tmp_path / "z", "--config", "/dev/zero"))
    for argv in cases:
        t0 = time.time()
        assert main(argv) == 2, argv
        line = one_line(capsys.readouterr().err)
        assert ("nests deeper" in line or "not a regular file" in line) and time.time() - t0 < 30, line


def test_a_sampling_record_bomb_is_one_line(base, tmp_path, capsys):
    run = gen_run(base, tmp_path)
    out = tmp_path / "s"
    argv = sample_args(base, run, out)
    assert main([*argv, "--num", "2", "--steps", "1"]) == 0
    capsys.readouterr()
    (out / "sampling.json").write_text("{" * 100_000)
    assert main([*argv, "--num", "2", "--steps", "1"]) == 2
    assert "nests deeper" in one_line(capsys.readouterr().err)


def test_gen_sample_refuses_impossible_sizes_before_allocating(base, tmp_path, capsys):
    run = gen_run(base, tmp_path)
    argv = sample_args(base, run, tmp_path / "s")
    for extra in (["--num", "1000000000"], ["--num", "1", "--steps", "1000000000"]):
        with pytest.raises(SystemExit) as e:
            main([*argv, *extra])
        assert e.value.code == 2
        assert "expected an integer in" in capsys.readouterr().err
    cfg_path = run / "model" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for shape, words in (([32, 0, 0], "three positive integers"), ([32, 3000, 3000], "needs about")):
        cfg["metadata"]["latent_shape"] = shape
        cfg_path.write_text(json.dumps(cfg))
        t0 = time.time()
        assert main([*argv, "--num", "1"]) == 2
        assert words in one_line(capsys.readouterr().err) and time.time() - t0 < 30


@pytest.mark.parametrize(
    "flag, value",
    [("--cfg-scale", "inf"), ("--shift", "inf"), ("--shift", "nan"), ("--cfg-interval-start", "nan")],
)
def test_non_finite_sampler_settings_are_refused_by_the_parser(base, tmp_path, capsys, flag, value):
    run = gen_run(base, tmp_path)
    argv = sample_args(base, run, tmp_path / "s", "--num", 1)
    with pytest.raises(SystemExit) as e:
        main([*argv, flag, value])
    assert e.value.code == 2 and "finite" in capsys.readouterr().err


@pytest.mark.parametrize("multiplier", [0.0, float("nan"), -1.0])
def test_a_bad_latent_multiplier_is_refused_and_a_corrected_rerun_works(base, tmp_path, capsys, multiplier):
    run = gen_run(base, tmp_path)
    cfg_path = run / "model" / "config.json"
    good = cfg_path.read_text()
    cfg = json.loads(good)
    cfg["metadata"]["latent_multiplier"] = multiplier
    cfg_path.write_text(json.dumps(cfg).replace("NaN", "NaN"))
    out = tmp_path / "s"
    argv = sample_args(base, run, out, "--num", 2, "--steps", 1)
    assert main(argv) == 2
    assert "latent_multiplier" in one_line(capsys.readouterr().err)
    cfg_path.write_text(good)
    assert main([*argv, "--shift", "0.5"]) == 0  # nothing left behind blocks the corrected rerun


# -- 12. an extreme aspect ratio is a bad file, skipped and counted ---------------------------------
def test_a_one_pixel_high_panorama_is_skipped_and_counted_everywhere(base, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(data / f"ok{i}.png")
    Image.fromarray(np.zeros((1, 500_000, 3), np.uint8)).save(data / "panorama.png")  # valid, ~1.5 KB
    assert (data / "panorama.png").stat().st_size < 300_000
    rc = main(
        ["evaluate", "--model", str(base / "vae"), "--data", str(data), "--out", str(tmp_path / "ev")]
        + ["--resolution", "32", "--metrics", "psnr", "--quiet"]
    )
    assert rc == 1
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["results"][0]["num_images"] == 3 and res["results"][0]["num_skipped"] == 1
    assert "Mpixel" in res["skipped"]["32"][0]["reason"]
    capsys.readouterr()
    rc = main(
        ["extract-latents", str(data), "--model", str(base / "vae"), "--out", str(tmp_path / "lat")]
        + ["--resolution", "32", "--num-workers", "0"]
    )
    assert rc == 1 and len(LatentFolder(tmp_path / "lat")) == 3
    capsys.readouterr()
    rc = main(
        ["train", "--model", NANO, "--data", str(data), "--out", str(tmp_path / "tr"), "--resolution", "32"]
        + ["--batch-size", "2", "--max-steps", "2", *QUIET, *L1_ONLY]
    )
    assert rc == 0
    assert "panorama.png" in (tmp_path / "tr" / "bad_files.txt").read_text()


# -- 13. one broken label does not size the generator -----------------------------------------------
def test_a_label_beyond_the_classes_is_refused_naming_the_shard(base, tmp_path, capsys):
    lat = tmp_path / "lat"
    lat.mkdir()
    save_file(
        {"latents": torch.randn(4, 32, 2, 2), "labels": torch.tensor([0, 1, 2_000_000, 1])},
        str(lat / "a.safetensors"),
    )
    assert main(gen_args(base, tmp_path / "g", latents=lat)) == 2
    line = one_line(capsys.readouterr().err)
    assert "a.safetensors" in line and "2000000" in line
    assert not (tmp_path / "g" / "checkpoints").exists()


# -- 14. a resumed run trains on the same latents, wherever it is started from ----------------------
def test_resume_finds_its_latents_by_content_not_by_relative_path(base, tmp_path, capsys, monkeypatch):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
    shutil.copytree(base / "latents", a / "latents")
    monkeypatch.chdir(a)
    assert main(gen_args(base, tmp_path / "run", latents=Path("latents"))) == 0
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["config"]["data"]["latents"] == str(a / "latents")  # stored absolute
    # another folder of the same name elsewhere: the resumed run keeps training on a/latents
    (b / "latents").mkdir()
    save_file(
        {"latents": torch.randn(4, 32, 2, 2), "labels": torch.zeros(4, dtype=torch.int64)},
        str(b / "latents" / "x.safetensors"),
    )
    monkeypatch.chdir(b)

    def resume(steps: int, *more: str) -> int:
        return main(
            [
                "gen-train",
                "--out",
                str(tmp_path / "run"),
                "--resume",
                "--max-steps",
                str(steps),
                *more,
                *QUIET,
            ]
        )

    assert resume(3) == 0
    # asked to train on other latents: refused in one line
    assert resume(4, "--latents", "latents") == 2
    assert "other latents" in one_line(capsys.readouterr().err)
    # the same latents moved elsewhere: found by content
    shutil.move(str(a / "latents"), str(tmp_path / "moved"))
    assert resume(4, "--latents", str(tmp_path / "moved")) == 0


# -- 15. latents stay tied to the tokenizer that made them ------------------------------------------
def test_mixed_tokenizer_latents_are_refused_by_gen_train(base, tmp_path, capsys):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(base / "latents", mixed)
    rc = main(
        [
            "extract-latents",
            str(base / "photos"),
            "--model",
            str(base / "other_vae"),
            "--out",
            str(tmp_path / "o"),
        ]
        + ["--resolution", "32", "--num-workers", "0"]
    )
    assert rc == 0
    shutil.copy(next((tmp_path / "o").glob("*.safetensors")), mixed / "zz_other.safetensors")
    capsys.readouterr()
    assert main(gen_args(base, tmp_path / "g", latents=mixed)) == 2
    line = one_line(capsys.readouterr().err)
    assert "different tokenizers" in line and "zz_other.safetensors" in line


def test_a_tokenizer_of_the_same_name_with_other_weights_is_refused(base, tmp_path, capsys):
    assert main(gen_args(base, tmp_path / "g", "--vae", base / "other_vae")) == 2
    assert "not the tokenizer that made the latents" in one_line(capsys.readouterr().err)
    run = gen_run(base, tmp_path)
    argv = ["gen-sample", "--run", str(run), "--out", str(tmp_path / "s"), "--num", "2", "--steps", "1"]
    assert main([*argv, "--vae", str(base / "other_vae")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "other weights" in line and "--force" in line
    assert main([*argv, "--vae", str(base / "other_vae"), "--force"]) == 0
    meta = transvae.from_pretrained(run).metadata
    assert meta["tokenizer"]["fingerprint"] == LatentFolder(base / "latents").tokenizer["fingerprint"]


# -- 18. a killed run's log is cut back to its checkpoint on resume ---------------------------------
def test_resume_after_a_kill_logs_every_step_once(base, tmp_path):
    run = tmp_path / "run"
    argv = [
        *gen_args(base, run),
        "--max-steps",
        "4",
        "--train.checkpoint_every=2",
        "--train.keep_checkpoints=5",
        "--log.every=1",
    ]
    assert main(argv) == 0
    # what a SIGKILL after step 4's log line but before its checkpoint leaves: log to 4, checkpoint 2
    os.replace(run / "checkpoints" / "step_00000002.pt", run / "checkpoints" / "last.pt")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss/to')  # a line cut by the kill
    assert main([*argv, "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if s > 0]
    assert sorted(set(train_steps)) == [1, 2, 3, 4] and len([s for s in steps if s in (3, 4)]) <= 4


# -- 21. SIGTERM is honoured inside a long validation -----------------------------------------------
def test_sigterm_during_the_first_validation_stops_within_a_batch(base, tmp_path):
    cfg = build_config(
        overrides={
            "model.name": NANO,
            "data.train": [str(base / "photos")],
            "data.val": [str(base / "photos")],
            "data.resolution": 32,
            "data.num_workers": 0,
            "train.batch_size": 1,
            "train.max_steps": 5,
            "loss.lpips_weight": 0.0,
            "loss.vf_weight": 0.0,
            "loss.gan_weight": 0.0,
            "log.progress": False,
            "log.tensorboard": False,
        }
    )
    tr = Trainer(cfg, tmp_path / "run")
    batches = []
    original = tr.check_stop

    def slow_check():  # each validation batch: record it, and send SIGTERM at the second
        batches.append(time.time())
        if len(batches) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        original()

    tr.check_stop = slow_check
    summary = tr.fit()
    assert summary["status"] == "stopped by SIGTERM" and summary["exit_status"] == 143
    assert summary["step"] == 0 and len(batches) == 2  # the other 6 validation batches never ran
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 0
    assert threading.main_thread().is_alive()


# -- 5. file names reach the terminal with their control characters escaped -------------------------
def test_control_characters_in_file_names_are_escaped_on_the_terminal(base, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data / "good.png")
    evil = "a\x1b]0;pwned\x07\x1b[2J\nfailed fake.png: forged.png"
    (data / evil).write_bytes(b"not an image")
    rc = main(["reconstruct", str(data), "--model", str(base / "vae"), "--out", str(tmp_path / "rec")])
    err = capsys.readouterr().err
    assert rc == 1 and "\x1b" not in err and "\x07" not in err
    failed = [ln for ln in err.splitlines() if ln.startswith("failed")]
    assert len(failed) == 1 and "\\x1b]0;pwned\\x07" in failed[0] and "\\x0afailed fake.png" in failed[0]


# -- 20. stage 2 needs no network for a term that cannot train anything -----------------------------
def test_stage_2_without_lpips_runs_offline_without_looking_for_dinov2(base, tmp_path, monkeypatch):
    import transvae.losses.alignment as alignment

    def no_dino(*a, **k):
        raise AssertionError("stage 2 must not build DINOv2")

    monkeypatch.setattr(alignment, "DinoFeatures", no_dino)
    assert main(train_args(base, tmp_path / "s1")) == 0
    t0 = time.time()
    argv = ["train", "--stage", "2", "--init", str(tmp_path / "s1" / "model"), "--data", str(base / "photos")]
    argv += ["--out", str(tmp_path / "s2"), "--resolution", "32", "--batch-size", "2", "--max-steps", "1"]
    argv += [*QUIET, "--loss.lpips_weight=0", "--loss.disc_ndf=8"]  # default VF weight 0.1, GAN 0.1
    assert main(argv) == 0 and time.time() - t0 < 60


def test_extract_latents_records_the_tokenizer_in_every_shard_and_the_statistics(base):
    import json as _json

    from safetensors import safe_open

    from transvae.models.persistence import model_identity

    expected = model_identity(transvae.from_pretrained(base / "vae"))
    assert len(expected["fingerprint"]) == 16 and expected["name"] == NANO
    shards = sorted((base / "latents").glob("*.safetensors"))
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            assert _json.loads(f.metadata()["tokenizer"]) == expected
    assert _json.loads((base / "latents" / "latents_stats.json").read_text())["tokenizer"] == expected
    assert _json.loads((base / "latents" / "extraction.json").read_text())["tokenizer"] == expected
    other = model_identity(transvae.from_pretrained(base / "other_vae"))
    assert other["name"] == expected["name"] and other["fingerprint"] != expected["fingerprint"]
