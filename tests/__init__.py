"""Makes the test tree a package, so pytest puts the repository root (not tests/) on
sys.path: a tests/<pkg>/ folder would otherwise shadow the real <pkg> as a namespace package."""
