import sys
from pathlib import Path

# tests/models/ (the shared model fixtures) is imported as `models` by the test modules
sys.path.insert(0, str(Path(__file__).parent))
