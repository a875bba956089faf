import sys
from pathlib import Path

# tests/models.py is shared by the test modules
sys.path.insert(0, str(Path(__file__).parent))
