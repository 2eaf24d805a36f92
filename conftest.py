import os
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "tnconv-numba"))
sys.path.insert(0, str(Path(__file__).parent / "tests"))
