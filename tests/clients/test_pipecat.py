"""Pipecat's OpenAILLMService in a minimal pipeline (no transport) as a client of a real proxy."""

from __future__ import annotations

import asyncio
import json

import pytest
from pipecat.adapters.schemas.function_schema import FunctionSchema
from pipecat.adapters.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService

from tests.clients import scenario as s

pytestmark = pytest.mark.slow


class Collector(FrameProcessor):
    """What reached the end of the pipeline: text per response, and errors."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.current: list[str] = []
        self.errors: list[str] = []
        self.responses = asyncio.Queue[str]()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.current.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            text, self.current = "".join(self.current), []
            if text:
                self.responses.put_nowait(text)
        elif isinstance(frame, ErrorFrame):
            self.errors.append(str(frame.error))
        await self.push_frame(frame, direction)


async def test_pipecat_streams_uses_tools_retries_and_keeps_history(client_proxy, mock, task_id):
    s.script(mock)
    s.queue_meta(client_proxy.url, task_id)
    llm = OpenAILLMService(
        model=s.MODEL,
        base_url=client_proxy.url + "/v1",
        api_key=s.API_KEY,
        default_headers={"X-Task-Id": task_id},
        retry_on_timeout=True,
        retry_timeout_secs=s.CLIENT_TIMEOUT_S,
    )
    tool_runs: list[dict] = []

    async def get_weather(params) -> None:
        tool_runs.append(dict(params.arguments))
        await params.result_callback(json.loads(s.TOOL_RESULT))  # Pipecat JSON-encodes it

    llm.register_function("get_weather", get_weather)
    weather = FunctionSchema(
        name="get_weather",
        description="The weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
    )
    context = LLMContext(
        messages=[{"role": "user", "content": s.HELLO}], tools=ToolsSchema([weather])
    )
    collector = Collector()
    # The collector sees the service's frames before the aggregator folds them into context.
    task = PipelineTask(Pipeline([llm, collector, LLMAssistantAggregator(context)]))
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))

    async def turn() -> str:
        await task.queue_frame(LLMContextFrame(context))
        return await asyncio.wait_for(collector.responses.get(), timeout=30)

    # 1. A stream with meta.info events in it (Pipecat once dropped them silently: fine).
    assert await turn() == s.HI
    # 2. The tool: Pipecat runs it and asks again with the result.
    context.add_message({"role": "user", "content": s.ASK})
    assert await turn() == s.SUNNY
    assert tool_runs == [s.TOOL_ARGS]
    # 3. A slow upstream: Pipecat times out and retries (retry_on_timeout).
    context.add_message({"role": "user", "content": s.THANKS})
    assert await turn() == s.WELCOME
    await task.queue_frame(EndFrame())
    try:
        await asyncio.wait_for(runner, timeout=10)
    finally:
        await task.cancel()
    assert collector.errors == []

    s.check_upstream(mock)
    s.check_stored(client_proxy.url, task_id)
