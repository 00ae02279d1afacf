from django.conf import settings
from django.db import models


class Message(models.Model):
    """Kept only to carry the ``chat.send_message`` permission of the example."""

    room = models.CharField(max_length=50)
    text = models.CharField(max_length=500)

    class Meta:
        permissions = [("send_message", "Can send chat messages")]


class Room(models.Model):
    """A room only its members may join (``chat.join_room`` on the room object)."""

    name = models.SlugField(max_length=50, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="rooms", blank=True)

    class Meta:
        permissions = [("join_room", "Can join the room")]

    def __str__(self):
        return self.name
