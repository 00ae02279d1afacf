from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST

from wsops import push


@login_required
@ensure_csrf_cookie
def index(request):
    return render(request, "chat/index.html", {"room": request.GET.get("room", "lobby")})


@login_required
@require_POST
def notify(request):
    """Push a notice to every live socket of the logged-in user, on every worker."""
    text = request.POST.get("text", "")[:500]
    workers = push.send_to_user(request.user.pk, {"type": "chat.message", "text": text,
                                                  "user": "server"})
    return JsonResponse({"workers": workers})
