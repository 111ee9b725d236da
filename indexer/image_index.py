"""Image index: each image as a handful of vectors, with memory flat in the image count (the paper's Fig. 12).

The paper's ImageNet retrieval treats "each image as a single segment". This index mode stores, for every
image and every prototype active in it (the argmax of the teacher's scores at feature resolution, docs/method.md §7),
ONE vector: the L2-normalised mean of the image's normalised teacher projections over that prototype's
pixels, exactly the vector of the ordinary index's segment (:func:`core.inference.image_segments`), with
its score (the release's ŝ_k · mean(ẑ)) and area share; optionally also one global vector per image (the
normalised mean over all of its pixels). No masks, RLE, crops or per-pixel data are kept.

Build (:func:`build_image_index`): images stream through the inference model in batches (DataLoader,
:func:`indexer.segments.model_input`, :func:`core.infer_model.inference_model_for`); vectors are appended
to float32 files and metadata is written to SQLite in bounded batches, so nothing grows in memory with the
image count but the list of image paths. The FAISS indexes are then built from the float32 files read in
chunks (:func:`indexer.vectors.build_faiss`): an exact flat inner-product index up to ``flat_max`` vectors,
IVF-PQ above (at most :data:`MAX_AUTO_NLIST` lists by default, trained on a bounded random sample of 64
vectors per list, then filled chunk by chunk). What still grows with the count is the IVF-PQ index itself
(m bytes of PQ code + an 8-byte id per vector) and the list of image paths. The build happens in a
temporary directory renamed over ``out`` only when complete.

Layout of an image-index directory::

    manifest.json   kind "image-index", version, checkpoint path + sha256, data root/split, resize/crop,
                    dim, num_prototypes, counts, FAISS specs, inference, built_at
    images.db       SQLite: images(id, file_name, width, height, num_vectors, global_row),
                    vectors(id, image_id, prototype, score, area_share, feature_area), skipped
    vectors.f32     (N, D) float32, row = vector id (the exact vectors: re-ranking, brute force)
    vectors.faiss   FAISS inner-product index of vectors.f32, FAISS id = vector id
    global.f32      (M, D) float32 global vectors, row = images.global_row (only with global vectors)
    global.faiss    FAISS index of global.f32 (only with global vectors)
    prototypes.npy  (K, D) L2-normalised teacher prototypes

Queries (:class:`ImageIndex`): :meth:`ImageIndex.top_k` (the images where a prototype scores highest,
from SQLite) and :meth:`ImageIndex.neighbors` (cosine search in FAISS; IVF-PQ candidates are re-ranked
with the exact vectors). CLI: ``slotcon index-images``.

Modules: :mod:`indexer.image_schema` (format, records), :mod:`indexer.image_vectors` (vectors, FAISS),
:mod:`indexer.image_build` (the build), :mod:`indexer.image_store` (queries), :mod:`indexer.images_cli` (the CLI);
this module gathers their public names.
"""

from __future__ import annotations

from indexer.image_build import (
    ImageIndexConfig,
    build_image_index,
)
from indexer.image_schema import (
    ADD_CHUNK,
    DB_NAME,
    EXACT_SUBSET_MAX,
    FLAT_MAX_VECTORS,
    GLOBAL_FAISS,
    GLOBAL_RAW,
    INDEX_TYPE_CHOICES,
    KIND,
    MANIFEST_NAME,
    MAX_AUTO_NLIST,
    PROTOTYPES_NAME,
    RERANK_FACTOR,
    SUBSET_CACHE_ENTRIES,
    SUBSET_CACHE_IDS,
    VECTORS_FAISS,
    VECTORS_RAW,
    VERSION,
    GlobalVectorsUnavailableError,
    ImageEntry,
    ImageIndexError,
    ImageIndexManifest,
    Neighbor,
    VectorRecord,
)
from indexer.image_store import (
    ImageIndex,
    search_vectors,
)
from indexer.image_vectors import (
    ImageVectors,
    faiss_from_raw,
    image_vectors,
    vector_spec,
)
from indexer.images_cli import (
    get_args_parser,
    main,
)

__all__ = [
    "ADD_CHUNK",
    "DB_NAME",
    "EXACT_SUBSET_MAX",
    "FLAT_MAX_VECTORS",
    "GLOBAL_FAISS",
    "GLOBAL_RAW",
    "GlobalVectorsUnavailableError",
    "INDEX_TYPE_CHOICES",
    "ImageEntry",
    "ImageIndex",
    "ImageIndexConfig",
    "ImageIndexError",
    "ImageIndexManifest",
    "ImageVectors",
    "KIND",
    "MANIFEST_NAME",
    "MAX_AUTO_NLIST",
    "Neighbor",
    "PROTOTYPES_NAME",
    "RERANK_FACTOR",
    "SUBSET_CACHE_ENTRIES",
    "SUBSET_CACHE_IDS",
    "VECTORS_FAISS",
    "VECTORS_RAW",
    "VERSION",
    "VectorRecord",
    "build_image_index",
    "faiss_from_raw",
    "get_args_parser",
    "image_vectors",
    "main",
    "search_vectors",
    "vector_spec",
]
