import numpy as np
import pytest

from joulepath.workload import TraceError, read_azure_csv, trace_stats

from ..conftest import shared_file

CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:48.0000000,100,10
"""


def test_reads_azure_format_sorted_with_seven_digit_fractions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    trace = read_azure_csv(path)
    assert len(trace) == 3
    np.testing.assert_allclose(trace.arrival_s, [0.0, 1.31941, 4.314579], atol=1e-5)
    assert trace.prompt_tokens.tolist() == [374, 100, 396]
    assert trace.source.startswith("measured")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n", "missing column"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nnot-a-time,1,2\n", r":2: bad value"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,-2\n", ">= 0"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
        (  # too few columns: used to say "bad value (int() argument must be ... not 'NoneType')"
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,2\n2023-11-16 18:15:47,3\n",
            r"bad.csv:3: 2 column\(s\) where the header has 3.*TIMESTAMP,ContextTokens,GeneratedTokens",
        ),
        (  # too many columns: used to be read silently
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,2,9\n",
            r"bad.csv:2: 4 column\(s\) where the header has 3.*TIMESTAMP,ContextTokens,GeneratedTokens",
        ),
        (  # line numbers count blank lines
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\n2023-11-16 18:15:46,1,2\n\n2023-11-16 18:15:47,x,2\n",
            r"bad.csv:5: bad value",
        ),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        read_azure_csv(path)


def test_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TraceError, match="does not exist"):
        read_azure_csv(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="is a folder"):
        read_azure_csv(tmp_path)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceError, match=r"b.csv: not a text CSV"):
        read_azure_csv(binary)


def test_a_spreadsheet_byte_order_mark_is_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.csv"
    path.write_text("\ufeff" + CSV, encoding="utf-8")
    assert len(read_azure_csv(path)) == 3


def test_scaling_window_and_priorities(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    trace = read_azure_csv(path).scaled(2.0)
    assert trace.arrival_s[-1] == pytest.approx(4.314579 / 2, abs=1e-5)
    assert len(trace.window(1.0)) == 2
    prio = trace.with_priorities(0.0, seed=1)
    assert (prio.priority == 1).all() and prio.requests()[0].priority == "batch"
    with pytest.raises(TraceError):
        trace.scaled(0)


def test_stats_of_the_real_azure_trace() -> None:
    stats = trace_stats(read_azure_csv(shared_file("azure_llm_inference_2023_conv.csv")))
    assert stats.n_requests == 19_366
    assert stats.arrival_rate_per_s == pytest.approx(5.53, abs=0.01)
    assert stats.prompt_tokens_pct["p50"] == 1020 and stats.output_tokens_pct["p50"] == 129
