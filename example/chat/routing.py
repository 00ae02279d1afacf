from django.urls import re_path

from .consumers import ChatConsumer
from .rooms import RoomConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room>[\w-]{1,50})/$", ChatConsumer.as_asgi()),
    re_path(r"^ws/room/(?P<room>[\w-]{1,50})/$", RoomConsumer.as_asgi()),
]
