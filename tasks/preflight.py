"""Check every input before any work starts: a bad value fails in a second, with nothing written or registered."""

from __future__ import annotations

from enginewright.devices import check_format_supported, compute_capability
from enginewright.spec import BuildSpec
from tasks.calibration import calibration_files, check_enough_text
from tasks.eval_data import check_eval_data
from tasks.sources import check_checkpoint_dir, locate_source


def check_inputs(spec: BuildSpec) -> None:
    from enginewright.models import load_tokenizer

    check_format_supported(spec.quantization.format, compute_capability())
    _, path, _ = locate_source(spec.source)
    check_checkpoint_dir(path, spec.source)
    check_eval_data(spec.evaluation.data_dir, list(spec.evaluation.tasks), spec.evaluation.num_fewshot)
    calibration_files(spec.calibration)
    check_enough_text(spec.calibration, load_tokenizer(path, spec.source.trust_remote_code))
