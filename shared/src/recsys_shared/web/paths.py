"""The catalogue's item path: every item id but the popular list's.

``/v1/items/popular`` is the popular list (GET only). An item route matching it too would
take a PUT there as a write of an item that could never be read back; with this segment it
does not match, so the shared handler answers 405 with ``Allow: GET, HEAD``, as for any
path's unsupported method. The OpenAPI document says the same of the path parameter
(``CatalogueItemId``).
"""

from __future__ import annotations

from starlette.convertors import StringConvertor, register_url_convertor

from recsys_shared.schemas import RESERVED_ITEM_ID


class _CatalogueIdConvertor(StringConvertor):
    regex = rf"(?!{RESERVED_ITEM_ID}$)[^/]+"


register_url_convertor("catalogue_id", _CatalogueIdConvertor())

#: A catalogue route's path below its prefix, e.g. ``@router.put(CATALOGUE_ITEM)``.
CATALOGUE_ITEM = "/{item_id:catalogue_id}"
