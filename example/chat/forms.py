from django import forms


class SendMessageForm(forms.Form):
    text = forms.CharField(max_length=500, strip=True)


class EchoForm(forms.Form):
    text = forms.CharField(max_length=2000, strip=False)


class PostForm(forms.Form):
    room = forms.SlugField(max_length=50)
    text = forms.CharField(max_length=500, strip=True)
