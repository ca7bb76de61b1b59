"""Race fdbert against PyTorch, ONNX Runtime and OpenVINO: ``python benchmarks/run_bench.py -h``.

The same as ``fdbert bench``; see fdbert/bench/__init__.py and docs/benchmarks.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from fdbert.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
