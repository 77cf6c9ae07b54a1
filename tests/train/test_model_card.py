"""Every saved SFT checkpoint carries a README.md model card naming its parent, data, params and run."""

import hashlib

import pytest
import yaml

from nebula_utils.runs import start_run
from nebula_utils.stages.sft import SFTStageConfig
from nebula_utils.train.model_card import model_card
from nebula_utils.train.sft import train_sft
from tests.factories import copied_model, small_mix
from tests.train.test_sft import sft_params


def split(text):
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def card(model_dir):
    return split((model_dir / "README.md").read_text())


@pytest.mark.slow  # ~20 s alone (a data version, one short training, first imports of TRL)
def test_sft_checkpoint_card_names_parent_run_data_hash_params_and_metrics(tmp_path, tiny_model_path):
    from nebula_utils.data.versions import version_info

    # the parent: a checkpoint inside an earlier run's folder (its weights copied, not trained: the
    # card only needs the run that holds it); the data: a data version with a content hash
    first = start_run("20_sft", sft_params(tmp_path, max_steps=2, run_dir=str(tmp_path / "first")))
    copied_model(first.path("model"))
    first.finish()
    mix = small_mix(tmp_path / "mix") / "sft"
    second = start_run(
        "20_sft",
        sft_params(
            tmp_path, max_steps=2, model=str(first.path("model")), data=str(mix), run_dir=str(tmp_path / "second")
        ),
    )
    metrics = train_sft(second.config, second.run_dir)

    meta, body = card(second.path("model"))
    nebula = meta["nebula"]
    assert nebula["run_id"] == second.run_id and nebula["stage"] == "20_sft"
    assert nebula["parent"]["run_id"] == first.run_id and nebula["parent"]["spec"] == str(first.path("model"))
    (data,) = nebula["data"]
    assert data["content_hash"] == version_info(mix).content_hash and data["rows"] == version_info(mix).num_rows
    assert f"trained by run `{first.run_id}`" in body and version_info(mix).content_hash in body
    assert f"| train/loss_last | {metrics['train/loss_last']['value']:.6g} |" in body
    params = yaml.safe_load(body.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert params == second.config.to_dict()

    assert (second.path("model") / "config.json").is_file()  # the card sits in a loadable HF folder


def test_card_of_a_model_spec_trained_on_a_data_file(tmp_path):
    config = SFTStageConfig(**sft_params(tmp_path)).to_dict()
    meta, body = split(model_card(config, "20_sft-abc", "20_sft", {"train/loss_last": {"value": 1.5, "n": 16}}, "sft"))
    assert meta["nebula"]["parent"] == {"spec": "tiny-random", "run_id": None}
    (data,) = meta["nebula"]["data"]
    assert data["file_sha256"] == hashlib.sha256(open(config["data"], "rb").read()).hexdigest()
    assert meta["nebula"]["run_id"] == "20_sft-abc" and "| train/loss_last | 1.5 |" in body
