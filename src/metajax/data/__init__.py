"""Image data: one-folder-per-class image sets from directories and zips, decoded with Pillow,
cached once decoded, and Omniglot's official archives downloaded and unpacked. It knows nothing
of tasks or training. It may import only metajax._files.
"""
