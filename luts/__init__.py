"""Latency lookup tables: per-op latency of a device and the subnet latencies they predict."""
from .store import BUILTIN_TABLES, builtin_table_path, cache_dir, default_lut_path, load_table
from .table import SCHEMA, SCHEMA_VERSION, LatencyTable, LUTError

__all__ = ["BUILTIN_TABLES", "SCHEMA", "SCHEMA_VERSION", "LatencyTable", "LUTError",
           "builtin_table_path", "cache_dir", "default_lut_path", "load_table"]
