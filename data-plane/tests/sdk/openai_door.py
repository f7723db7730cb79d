"""The official `openai` Python SDK against Switchyard's HTTP door, unchanged:
only base_url and api_key point at Switchyard. Run by tests/openai_sdk.rs,
which starts the control plane, a worker and a fake upstream, and passes:

  SWITCHYARD_BASE_URL  http://127.0.0.1:PORT/v1
  SWITCHYARD_KEY       a caller key
  FAILING_MEMBER, SERVING_MEMBER  member ids of the "failing" pool

Each case prints "ok <name>"; the first failure raises (exit status 1).
"""

import json
import math
import os

import openai
from pydantic import BaseModel

BASE = os.environ["SWITCHYARD_BASE_URL"]
KEY = os.environ["SWITCHYARD_KEY"]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=20)


def ok(name):
    print("ok", name, flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


# Plain chat.
r = client.chat.completions.create(
    model="chat", messages=[{"role": "user", "content": "hi"}]
)
expect(r.choices[0].message.content.startswith("gpt-a says hello"), r)
expect(r.choices[0].finish_reason == "stop", r)
expect(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0, r.usage)
expect(r.id and r.object == "chat.completion", r)
ok("chat")

# Streaming, with the usage chunk at the end.
chunks = list(
    client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
expect(text.startswith("gpt-a says hello"), text)
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
expect(finishes == ["stop"], finishes)
expect(chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1])
expect(len({c.id for c in chunks}) == 1, "one id per stream")
ok("stream")

# Tools: a forced call, unary and streamed (the SDK's stream helper
# accumulates the tool call's arguments).
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True,
        },
    }
]
r = client.chat.completions.create(
    model="tools",
    messages=[{"role": "user", "content": "weather in Oslo?"}],
    tools=tools,
    tool_choice="required",
)
call = r.choices[0].message.tool_calls[0]
expect(call.function.name == "get_weather", call)
expect(json.loads(call.function.arguments) == {"city": "Oslo"}, call)
expect(r.choices[0].finish_reason == "tool_calls", r)
with client.chat.completions.stream(
    model="tools",
    messages=[{"role": "user", "content": "weather in Oslo?"}],
    tools=tools,
    tool_choice="required",
) as s:
    final = s.get_final_completion()
call = final.choices[0].message.tool_calls[0]
expect(call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}, final)
ok("tools")


# Structured output with a Pydantic model, served by an Anthropic member
# (a forced tool there, read back as content).
class Weather(BaseModel):
    city: str
    celsius: int


r = client.chat.completions.parse(
    model="structured",
    messages=[{"role": "user", "content": "weather in Oslo as JSON"}],
    response_format=Weather,
)
expect(r.choices[0].message.parsed == Weather(city="Oslo", celsius=-3), r)
ok("json_schema")

# An image part (inline, as a data: URL) to an Anthropic member.
r = client.chat.completions.create(
    model="claude",
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
            ],
        }
    ],
    max_tokens=64,
)
expect(r.choices[0].message.content.startswith("claude-a says hello"), r)
ok("image")

# Embeddings: the SDK asks for base64 by default and decodes it.
e = client.embeddings.create(model="emb", input=["alpha", "beta"])
expect(len(e.data) == 2 and all(len(d.embedding) == 4 for d in e.data), e)
f = client.embeddings.create(model="emb", input=["alpha", "beta"], encoding_format="float")
# float32 either way: base64 decodes them exactly, JSON prints them shortest.
same = all(
    math.isclose(x, y, rel_tol=1e-6)
    for a, b in zip(e.data, f.data)
    for x, y in zip(a.embedding, b.embedding)
)
expect(same and len(f.data) == 2, (e, f))
expect(e.usage.prompt_tokens > 0, e.usage)
ok("embeddings")

# The virtual models.
ids = {m.id for m in client.models.list()}
expect({"chat", "failing", "claude", "emb", "tools", "structured"} <= ids, ids)
ok("models")

# Errors, as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model must fail")
except openai.NotFoundError as err:
    expect(err.status_code == 404 and err.code == "model_not_found", err)
try:
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], temperature=5)
    raise AssertionError("temperature 5 must fail")
except openai.BadRequestError as err:
    expect("temperature" in str(err), err)
try:
    openai.OpenAI(base_url=BASE, api_key="sy_wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key must fail")
except openai.AuthenticationError as err:
    expect(err.status_code == 401, err)
ok("errors")

# Failover, visible in the headers: the first member fails, the next serves.
raw = client.chat.completions.with_raw_response.create(
    model="failing", messages=[{"role": "user", "content": "hi"}]
)
attempts = raw.headers["x-switchyard-attempts"]
expected = f"{os.environ['FAILING_MEMBER']}:transient,{os.environ['SERVING_MEMBER']}:ok"
expect(attempts == expected, (attempts, expected))
expect(raw.headers["x-switchyard-upstream"] == "fake/gpt-b", raw.headers)
expect(raw.headers["x-switchyard-caller"] == "sdk-app", raw.headers)
expect(raw.parse().choices[0].message.content.startswith("gpt-b says hello"), "served by gpt-b")
ok("failover")

# A stream that breaks after its first chunks ends with an error the SDK
# raises, never as a clean end.
got = []
try:
    for c in client.chat.completions.create(
        model="broken", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if c.choices and c.choices[0].delta.content:
            got.append(c.choices[0].delta.content)
    raise AssertionError(f"a broken stream must raise; got {got}")
except openai.APIError as err:
    expect(got and "failed mid-stream" in str(err), (got, err))
ok("broken_stream")
