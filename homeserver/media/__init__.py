"""The content repository: uploads, downloads, thumbnails and URL previews (spec: modules/content_repo)."""
