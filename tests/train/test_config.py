import re
from pathlib import Path

import pytest
import yaml

from rhn.train.config import build_config, load_config, save_config
from rhn.train.schema import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_yaml_holds_only_differences_and_defaults_fill_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("task: char_lm\nmodel: {depth: 5}\noptim: {lr: 2}\n")
    config = load_config(path)
    assert config.model.depth == 5
    assert config.model.hidden_size == 128  # default
    assert config.optim.lr == 2.0 and isinstance(config.optim.lr, float)
    assert config.train.max_epochs == 1


def test_a_config_starts_from_its_base_and_merges_at_every_depth(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text(
        "task: char_lm\nmodel: {depth: 5, hidden_size: 64}\n"
        "optim: {lr: 2, schedule: {name: multistep, gamma: 0.5, milestones: [3, 6]}}\n"
    )
    (tmp_path / "variant.yaml").write_text(
        "base: recipes/base.yaml\nmodel: {depth: 2}\noptim: {schedule: {milestones: [4]}}\n"
    )
    (tmp_path / "variant_of_variant.yaml").write_text(
        "base: variant.yaml\noptim: {schedule: {gamma: 0.25}}\n"
    )
    config = load_config(tmp_path / "variant.yaml", ["optim.lr=0.5"])
    assert (config.model.depth, config.model.hidden_size) == (2, 64)  # replaced, kept
    schedule = config.optim.schedule
    # a nested mapping merges key by key (the name and gamma stay); a list replaces whole
    assert (schedule.name, schedule.gamma, schedule.milestones) == ("multistep", 0.5, [4])
    assert config.optim.lr == 0.5  # --set comes last
    chained = load_config(tmp_path / "variant_of_variant.yaml").optim.schedule
    assert (chained.name, chained.gamma, chained.milestones) == ("multistep", 0.25, [4])
    assert load_config(tmp_path / "variant.yaml").optim.lr == 2.0  # the base's, not the --set


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: self.yaml\n", "leads back to itself"),
        ("base: loop_a.yaml\n", "leads back to itself"),
        ("base: missing.yaml\n", "missing.yaml"),
        ("base: [a.yaml]\n", "base must name another config file"),
        # A base that is not a mapping is named (it was a ValueError from dict()).
        ("base: a_list.yaml\n", r"a_list\.yaml: a config file must hold a mapping .*got a list"),
    ],
)
def test_bad_bases_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "loop_a.yaml").write_text("base: loop_b.yaml\n")
    (tmp_path / "loop_b.yaml").write_text("base: loop_a.yaml\n")
    (tmp_path / "a_list.yaml").write_text("- task: char_lm\n")
    (tmp_path / "self.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "self.yaml")


def test_overrides_are_parsed_and_type_checked() -> None:
    config = build_config(
        {"task": "char_lm"},
        [
            "optim.lr=1e-3",
            "optim.name=adamw",
            "train.max_steps=7",
            "optim.schedule.milestones=[2, 4]",
            "optim.betas=[0.8, 0.9]",
            "train.max_epochs=null",
        ],
    )
    assert config.optim.lr == 0.001 and config.optim.name == "adamw"
    assert config.train.max_steps == 7 and config.train.max_epochs is None
    assert config.optim.schedule.milestones == [2, 4]
    assert config.optim.betas == (0.8, 0.9)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=0.1"], r"unknown key 'optim\.lrr'; did you mean 'lr'\?"),
        (["trian.max_steps=3"], r"unknown top-level key 'trian'"),
        (["optim.lr=fast"], r"optim\.lr: expected a finite number, got 'fast'"),
        # .nan and .inf are YAML floats; no setting takes them (null is "no bound").
        (["model.gate_bias=.nan"], r"model\.gate_bias: expected a finite number, got nan"),
        (["model.init_range=.inf"], r"init_range: expected a finite number or null, got inf"),
        (["optim.clip_norm=.inf"], r"clip_norm: expected a finite number or null, got inf"),
        (["optim.weight_decay=-.inf"], r"weight_decay: expected a finite number, got -inf"),
        (["optim.schedule.decay=1e400"], r"decay: expected a finite number, got '1e400'"),
        (
            ["train.seed=18446744073709551616"],
            r"train\.seed: 18446744073709551616 is not allowed; "
            r"expected an integer in -2\*\*63 \.\. 2\*\*63 - 1",
        ),
        (["train.seed=-9223372036854775809"], r"train\.seed: -9223372036854775809 is not all"),
        (["train.max_steps=1.5"], r"train\.max_steps: expected an integer or null, got 1\.5"),
        (["optim.lr=-1"], r"optim\.lr: -1\.0 is not allowed; expected a number > 0"),
        (["optim.name=rmsprop"], r"optim\.name: expected one of 'sgd', 'adam', 'adamw'"),
        (["optim.momentum=1.5"], r"optim\.momentum: 1\.5 is not allowed"),
        (["optim.nesterov=true"], r"optim\.nesterov: True is not allowed; expected true only"),
        (
            ["optim.name=adam", "optim.momentum=0.9"],
            r"optim\.momentum: 0\.9 is not allowed; expected 0 with optim\.name 'adam' \(its",
        ),
        (
            ["optim.lr=0.1", "optim.schedule.name=cosine", "optim.schedule.min_lr=0.5"],
            r"optim\.schedule\.min_lr: 0\.5 is not allowed; expected a number <= optim\.lr = 0\.1",
        ),
        (["train.precision=fp16"], r"train\.precision: expected one of 'fp32', 'tf32', 'bf16'"),
        (["model.depth=0"], r"model\.depth must be >= 1, got 0"),
        (["model.tie_weights=true", "model.embed_size=10"], r"tie_weights needs embed_size"),
        (["train.max_steps=null", "train.max_epochs=null"], r"train\.max_steps: None"),
        (["data.batch_size=0"], r"data\.batch_size must be >= 1, got 0"),
        (["data.valid_fraction=1.5"], r"data\.valid_fraction, data\.test_fraction: .* in \(0, 1\)"),
        (["data.test_fraction=0"], r"data\.test_fraction: .*sum below 1, got 0\.05 and 0\.0"),
        (["data.valid_fraction=0.5", "data.test_fraction=0.5"], r"sum below 1, got 0\.5 and 0\.5"),
        (["optim.betas=[0.9]"], r"optim\.betas: expected 2 values, got \[0\.9\]"),
        (["optim"], r"expected section\.key=value"),
        # torch.device would take cpu:0 but read cuda:x / cudax only when the run starts
        (["train.device=cuda:x"], r"train\.device: 'cuda:x' is not allowed; expected 'auto'"),
        (["train.device=cpu:x"], r"train\.device: 'cpu:x' is not allowed"),
        (["train.device=gpu"], r"train\.device: 'gpu' is not allowed"),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_allowed(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"task": "char_lm"}, overrides)


def test_the_task_can_be_set_like_a_section_key() -> None:
    # task is the one top-level key; --set task=... works, and names its allowed values
    assert build_config({"task": "char_lm"}, ["task=word_lm"]).task == "word_lm"
    with pytest.raises(ConfigError, match=r"unknown task 'foo'"):
        build_config({"task": "char_lm"}, ["task=foo"])
    with pytest.raises(ConfigError, match=r"the key must be section.key, e.g. optim.lr \(or task"):
        build_config({"task": "char_lm"}, ["seed=1"])


def test_unknown_or_missing_task() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'char_llm'; did you mean 'char_lm'"):
        build_config({"task": "char_llm"})
    with pytest.raises(ConfigError, match="must name its task"):
        build_config({"model": {}})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: char_lm\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML") as caught:
        load_config(bad)
    # One line with the place, not PyYAML's several naming "<unicode string>"
    message = str(caught.value)
    assert "\n" not in message and "unicode string" not in message
    assert re.search(r"at line 3, column 1$", message), message
    with pytest.raises(ConfigError, match=r"--set 'optim.lr=\[1,': the value is not valid YAML"):
        build_config({"task": "char_lm"}, ["optim.lr=[1,"])
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("task: char_lm\noptim: {lr: zero}\n")
    with pytest.raises(ConfigError, match=r"wrong\.yaml: optim\.lr: expected a finite number"):
        load_config(wrong)


def test_a_key_given_twice_is_refused_not_silently_the_last(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("task: char_lm\noptim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 1.0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(twice)
    assert str(caught.value) == (
        f"{twice} is not valid YAML: key 'lr' appears twice at line 5, column 3"
    )
    twice.write_text("task: char_lm\ntrain: {max_steps: 3}\ntrain: {seed: 1}\n")
    with pytest.raises(ConfigError, match=r"key 'train' appears twice at line 3"):
        load_config(twice)
    with pytest.raises(ConfigError, match=r"--set .*key 'a' appears twice"):
        build_config({"task": "char_lm"}, ["model.gate_bias={a: 1, a: 2}"])
    # A key given beside a YAML merge key overrides the merged one: not a repeated key.
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "task: char_lm\nmodel: {depth: 2, hidden_size: 48}\n"
        "optim: {<<: {lr: 0.5, momentum: 0.5}, lr: 0.25}\n"
    )
    config = load_config(merged)
    assert (config.optim.lr, config.optim.momentum) == (0.25, 0.5)
    assert (config.model.depth, config.model.hidden_size) == (2, 48)


def test_an_empty_section_in_a_variant_keeps_its_bases_section(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("task: char_lm\nmodel: {hidden_size: 64}\n")
    (tmp_path / "variant.yaml").write_text("base: base.yaml\nmodel:\n")
    # 'model:' left empty replaced the base's section with nothing: hidden_size 128 unseen.
    assert load_config(tmp_path / "variant.yaml").model.hidden_size == 64
    config = load_config(tmp_path / "variant.yaml", ["model.depth=2"])
    assert (config.model.hidden_size, config.model.depth) == (64, 2)


def test_a_section_left_empty_takes_set_overrides(tmp_path: Path) -> None:
    empty = tmp_path / "empty_section.yaml"
    empty.write_text("task: char_lm\nmodel:\noptim:\n")
    config = load_config(empty, ["model.hidden_size=12", "optim.lr=0.25"])
    assert (config.model.hidden_size, config.optim.lr) == (12, 0.25)
    # A key that is a value, not a section, still can't take one.
    with pytest.raises(ConfigError, match=r"'task' is not a section"):
        build_config({"task": "char_lm"}, ["task.x=1"])


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "char_lm_tiny.yaml", ["optim.schedule.milestones=[3]"])
    save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["model"]["hidden_size"] == 48 and saved["optim"]["schedule"]["milestones"] == [3]
    assert build_config(saved) == config


@pytest.mark.parametrize(
    "device", ["auto", "cpu", "cpu:0", "cuda", "cuda:0", "cuda:12", "mps", "mps:0"]
)
def test_every_device_name_a_run_may_ask_for(device: str) -> None:
    assert build_config({"task": "char_lm"}, [f"train.device={device}"]).train.device == device
