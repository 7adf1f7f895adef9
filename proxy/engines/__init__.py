"""Engine adapters: what each voice engine adds to an OpenAI chat request, and where it goes.

An engine's own fields (Vapi's ``call``, ``metadata``, ``phoneNumber``, ``customer``;
ElevenLabs' ``elevenlabs_extra_body`` and ``user_id``) never reach the upstream, where
strict providers reject unknown fields. What they say is used instead: the engine's call
id names the task, and its metadata fills ``{{variables}}`` in the profile's system
prompt. TRTC's ``MetaInfo`` object is read the same way and removed at the upstream
target unless the target forwards it (``proxy.upstream.shape``).
"""
