"""An object-permission backend: ``chat.join_room`` on a room means "is a member".

Django asks every backend in ``AUTHENTICATION_BACKENDS`` for ``user.has_perm(perm,
obj)``; ModelBackend answers only global permissions, so object checks need one
like this (or django-guardian's / django-rules' backend: wsops' HasObjectPerm
works with any of them).
"""

from django.contrib.auth.backends import BaseBackend


class RoomMembershipBackend(BaseBackend):
    def has_perm(self, user_obj, perm, obj=None):
        from .models import Room

        if perm != "chat.join_room" or not isinstance(obj, Room) or not user_obj.is_active:
            return False
        return obj.members.filter(pk=user_obj.pk).exists()
