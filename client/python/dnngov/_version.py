# The workspace's version (Cargo.toml, [workspace.package]); tests/tests/python_package.rs
# fails when the two differ.
__version__ = "0.1.0"
