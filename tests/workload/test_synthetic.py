import dataclasses

import numpy as np
import pytest

from joulepath.workload import SyntheticParams, fit_synthetic, generate, read_azure_csv, trace_stats
from joulepath.workload.synthetic import AZURE_CONV_OUTPUT, AZURE_CONV_PROMPT

from ..conftest import shared_file


def test_same_seed_same_trace_and_different_seed_differs() -> None:
    a, b = generate(SyntheticParams(), 300, seed=3), generate(SyntheticParams(), 300, seed=3)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.prompt_tokens[:50], generate(SyntheticParams(), 300, seed=4).prompt_tokens[:50])


def test_generated_statistics_follow_the_parameters() -> None:
    params = dataclasses.replace(SyntheticParams(), arrival_rate_per_s=20.0, interarrival_cv=2.0)
    stats = trace_stats(generate(params, 2000, seed=0))
    assert stats.arrival_rate_per_s == pytest.approx(20.0, rel=0.05)
    assert stats.interarrival_cv == pytest.approx(2.0, rel=0.1)
    assert stats.prompt_tokens_mean == pytest.approx(AZURE_CONV_PROMPT.mean_tokens, rel=0.1)


def test_fit_recovers_generator_parameters() -> None:
    params = dataclasses.replace(SyntheticParams(), arrival_rate_per_s=8.0, interarrival_cv=1.5)
    fitted = fit_synthetic(generate(params, 4000, seed=2))
    assert fitted.arrival_rate_per_s == pytest.approx(8.0, rel=0.05)
    assert fitted.interarrival_cv == pytest.approx(1.5, rel=0.08)
    assert fitted.output.mean_tokens == pytest.approx(AZURE_CONV_OUTPUT.mean_tokens, rel=0.1)


def test_shipped_defaults_are_the_fit_of_the_azure_trace() -> None:
    fitted = fit_synthetic(read_azure_csv(shared_file("azure_llm_inference_2023_conv.csv")), seed=0)
    assert fitted == SyntheticParams()


def test_bad_parameters_refused() -> None:
    with pytest.raises(ValueError):
        generate(SyntheticParams(), -1)
