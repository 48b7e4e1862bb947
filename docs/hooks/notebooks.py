"""MkDocs hook: render the notebooks of ``notebooks/`` as pages under ``notebooks/`` without moving them.

The notebooks stay where the tests and users run them; MkDocs only reads pages inside ``docs/``, so this adds each
``notebooks/*.ipynb`` to the site's files before mkdocs-jupyter turns ``.ipynb`` files into pages.
"""

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files


# Before mkdocs-jupyter's on_files (default priority 0), which wraps every .ipynb it finds as a page.
@event_priority(100)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add ``<repo>/notebooks/*.ipynb`` to the site as ``notebooks/<name>.ipynb``."""
    root = Path(config.config_file_path).parent
    # A plain File whose source folder is the repository root, not File.generated: mkdocs-jupyter's wrapper
    # recomputes abs_src_path from src_dir, which a generated file does not have.
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = File(f"notebooks/{path.name}", str(root), config.site_dir, config.use_directory_urls)
        files.append(nb)
    return files
