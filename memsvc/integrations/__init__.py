"""memsvc where agents already are: an MCP server (`mcp_server`), a LangChain chat message history
(`langchain`) and a LlamaIndex memory block (`llamaindex`).

Each is one short module over the SDK (`memsvc.client`) and ships with it in `memsvc-client`,
importable only with its extra installed (`pip install 'memsvc-client[mcp]'`, `[langchain]`,
`[llamaindex]`); none imports another's framework.
"""
