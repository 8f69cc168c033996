"""Reports from run results: result.json now; report.html joins later. Imports result types only."""

from joulepath.report.result_json import result_to_dict, write_result

__all__ = ["result_to_dict", "write_result"]
