"""Readers, one module per export family, each turning files into the same records: images and masks (``io``),
multi-band rasters (``raster``), class tables and colour maps (``class_table``), mask files of a folder (``masks``),
polygons of COCO / LabelMe / CVAT as class-id masks (``polygons``), COCO JSON (``coco``), LabelMe / CVAT shapes as
object records (``objects``), and the listing and pairing of folder files (``folders``). A reader knows a format and
nothing of splits, transforms or batching."""
