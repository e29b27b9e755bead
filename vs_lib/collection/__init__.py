"""Collections: a folder of the user's own images, indexed, searched and de-duplicated.

A collection is the index of one folder by one encoder (the 224-px photo encoder by
default, :mod:`vs_lib.photo`), stored under ``config.data_dir()/collections/<name>/`` and
never written into the folder itself.  It remembers its folder, so ``--folder DIR`` finds
it whatever its name (``--name`` defaults to the folder's own name).

=========  ==========================================================================
module     job
=========  ==========================================================================
store      the manifest and vectors on disk, atomic saves, the one-writer lock
sync       :func:`index_folder`: incremental sync (size + mtime, confirmed by content
           hash; moved files keep their vectors; deleted ones dropped; interruptible);
           ``python -m vs_lib index --folder DIR``
search     :class:`Collection`: search by image, bytes or crop with near-duplicates
           collapsed among the results; thumbnails; ``python -m vs_lib search``
dedup      exact and near-duplicate groups from hashes and an index (no N x N matrix);
           ``python -m vs_lib dedup DIR``
sheet      contact sheets (PNG) of searches and duplicate groups
=========  ==========================================================================

    from vs_lib import collection
    collection.index_folder("/usr/share/tuxpaint/stamps")
    coll = collection.Collection.open(folder="/usr/share/tuxpaint/stamps")
    coll.search("query.jpg", k=10).results      # [Hit(path, score, rank, duplicates, ...)]
"""

from .dedup import (
    DEFAULT_THRESHOLD,
    DedupReport,
    DuplicateGroup,
    duplicate_groups,
    embedding_pairs,
    find_duplicates,
    hash_pairs,
)
from .search import DUP_HAMMING, Collection, Hit, SearchResult, parse_box
from .sheet import groups_sheet, search_sheet, write_png
from .store import (
    CollectionBusyError,
    CollectionError,
    CollectionInfo,
    CollectionState,
    FileRecord,
    collection_dir,
    collections_dir,
    find_collection,
    list_collections,
)
from .sync import SyncReport, default_name, index_folder, load_model, open_state

__all__ = [
    "DEFAULT_THRESHOLD",
    "DUP_HAMMING",
    "Collection",
    "CollectionBusyError",
    "CollectionError",
    "CollectionInfo",
    "CollectionState",
    "DedupReport",
    "DuplicateGroup",
    "FileRecord",
    "Hit",
    "SearchResult",
    "SyncReport",
    "collection_dir",
    "collections_dir",
    "default_name",
    "duplicate_groups",
    "embedding_pairs",
    "find_collection",
    "find_duplicates",
    "groups_sheet",
    "hash_pairs",
    "index_folder",
    "list_collections",
    "load_model",
    "open_state",
    "parse_box",
    "search_sheet",
    "write_png",
]
