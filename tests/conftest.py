import os
import sys

# tests import their shared helpers (random_models, helpers) by module name
sys.path.insert(0, os.path.dirname(__file__))
# the tests use the repository's models/ and generated/ folders by relative path
os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
