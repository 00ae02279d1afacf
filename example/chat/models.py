from django.db import models


class Message(models.Model):
    """Kept only to carry the ``chat.send_message`` permission of the example."""

    room = models.CharField(max_length=50)
    text = models.CharField(max_length=500)

    class Meta:
        permissions = [("send_message", "Can send chat messages")]
