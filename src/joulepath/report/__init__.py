"""Reports from run results: result.json, report.html, Parquet telemetry. Imports result types only."""

from joulepath.report.result_json import result_to_dict, write_result

__all__ = ["result_to_dict", "write_result"]
