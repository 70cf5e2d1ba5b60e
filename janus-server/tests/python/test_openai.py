"""The server through the official `openai` client with strict response validation."""

import base64
import io
import json
import signal
import time
import urllib.request

import openai
import pytest
from openai import OpenAI
from PIL import Image, ImageDraw

from conftest import KEY, MODEL, start_server

QUESTION = "What is in the image?"


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.url + "/v1", api_key=KEY, _strict_response_validation=True, max_retries=0)


def data_url(png):
    return "data:image/png;base64," + base64.b64encode(png).decode()


def ask(png, question=QUESTION):
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png)}},
        {"type": "text", "text": question},
    ]}]


def drawn_red_circle():
    """A red circle drawn with Pillow on the light grey of the shapes model's training images."""
    image = Image.new("RGB", (32, 32), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((7, 7, 24, 24), fill=(220, 30, 30))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_models_list(client):
    models = list(client.models.list())
    assert [m.id for m in models] == [MODEL]
    assert models[0].object == "model" and models[0].owned_by
    assert client.models.retrieve(MODEL).id == MODEL


@pytest.mark.parametrize("which", ["docs/red-circle.png", "drawn with Pillow"])
def test_chat_about_a_red_circle(client, red_circle_png, which):
    png = red_circle_png if which.startswith("docs") else drawn_red_circle()
    reply = client.chat.completions.create(model=MODEL, messages=ask(png))
    choice = reply.choices[0]
    assert choice.message.content == "a red circle."
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model == MODEL and reply.id.startswith("chatcmpl-")


def test_chat_streamed_with_usage(client, red_circle_png):
    stream = client.chat.completions.create(
        model=MODEL, messages=ask(red_circle_png), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a red circle."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_multi_turn_chat(client, red_circle_png):
    messages = ask(red_circle_png) + [
        {"role": "assistant", "content": "a red circle."},
        {"role": "user", "content": QUESTION},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_images_generate_b64(client):
    result = client.images.generate(
        model=MODEL, prompt="a red circle", n=2, response_format="b64_json", extra_body={"seed": 1})
    assert len(result.data) == 2
    for item in result.data:
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "PNG" and image.size == (32, 32)
    again = client.images.generate(
        model=MODEL, prompt="a red circle", n=2, response_format="b64_json", extra_body={"seed": 1})
    assert [d.b64_json for d in again.data] == [d.b64_json for d in result.data]


def test_images_generate_url(client):
    result = client.images.generate(model=MODEL, prompt="a blue square", response_format="url",
                                    extra_body={"cfg_weight": 2.0, "temperature": 0.8})
    with urllib.request.urlopen(result.data[0].url, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(response.read())).size == (32, 32)


def test_errors_raise_the_clients_typed_exceptions(client, server, red_circle_png):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ask(red_circle_png), n=2)
    assert e.value.status_code == 400 and e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "data:" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a b " * 600}])
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model=MODEL, prompt="a red circle", size="1024x1024")
    assert e.value.param == "size"
    wrong = OpenAI(base_url=server.url + "/v1", api_key="wrong", _strict_response_validation=True, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_progress_endpoint(server):
    request = urllib.request.Request(
        server.url + "/janus/v1/images/generations",
        data=json.dumps({"prompt": "a yellow triangle", "n": 2}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read().decode()
    names = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
    assert names[0] == "queued" and names[-3:] == ["image", "image", "done"]
    assert names.count("progress") == 64


def test_sigterm_shuts_down_gracefully(tmp_path):
    server = start_server(tmp_path)
    started = time.time()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
    assert time.time() - started < 10
