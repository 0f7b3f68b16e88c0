"""Latency lookup tables: per-op latency of a device and the subnet latencies they predict."""
from .store import BUILTIN_TABLES, builtin_table_path, cache_dir, default_lut_path, load_table
from .table import PRECISIONS, SCHEMA, SCHEMA_VERSION, LatencyTable, LUTError, check_precision

__all__ = ["BUILTIN_TABLES", "PRECISIONS", "SCHEMA", "SCHEMA_VERSION", "LatencyTable", "LUTError",
           "builtin_table_path", "cache_dir", "check_precision", "default_lut_path", "load_table"]
