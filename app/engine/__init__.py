"""The BPMN engine: the only package that imports SpiffWorkflow.

`runtime` parses, starts, steps, parks, resumes and serializes process instances;
`validation`, `sandbox`, `script_engine` and `canonical` guard what admins upload.
"""
