"""The voice-engine stand-in (``proxy dev engine``): a room, a script, TTS and the
engine's LLM stream, driving the proxy as TRTC Conversational AI does."""
