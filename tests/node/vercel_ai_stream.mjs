// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, chat completions provider) against the gateway:
// one streaming text answer with usage, and one streaming answer with parallel tool calls.
// Its chunk schemas are strict (zod), so a deviation shows up as an error part.
// Reads OPENAI_BASE_URL, OPENAI_API_KEY and MODEL; prints a JSON summary on stdout.
import { createOpenAI } from "@ai-sdk/openai";
import { streamText, tool } from "ai";
import { z } from "zod";

const provider = createOpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });
const model = provider.chat(process.env.MODEL);

const errors = [];
const text = streamText({ model, prompt: "Say hello", maxRetries: 0, onError: ({ error }) => errors.push(String(error)) });
let answer = "";
for await (const part of text.textStream) answer += part;
const usage = await text.usage;

const withTools = streamText({
  model,
  prompt: "What is the weather in Paris and Oslo?",
  maxRetries: 0,
  tools: { get_weather: tool({ description: "Weather in a city", inputSchema: z.object({ city: z.string() }) }) },
  onError: ({ error }) => errors.push(String(error)),
});
const toolCalls = [];
for await (const part of withTools.fullStream) {
  if (part.type === "tool-call") toolCalls.push({ id: part.toolCallId, name: part.toolName, input: part.input });
  if (part.type === "error") errors.push(String(part.error));
}
const finishReason = await withTools.finishReason;

console.log(JSON.stringify({ answer, usage, toolCalls, finishReason, errors }));
