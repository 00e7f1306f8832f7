"""Every name ``vledge`` exports, and every public method and property of the classes among them, has a
docstring and (for callables) a return annotation, so that ``help(vledge.load)`` and an editor say what
comes back."""

import inspect

import vledge


def _members(cls):
    """The public methods and properties ``cls`` defines itself (dataclass fields are documented by it)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield f"{cls.__name__}.{name}", value.fget
        elif isinstance(value, (classmethod, staticmethod)):
            yield f"{cls.__name__}.{name}", value.__func__
        elif inspect.isfunction(value):
            yield f"{cls.__name__}.{name}", value


def _public_api():
    found = []
    for name in vledge.__all__:
        obj = getattr(vledge, name)
        found.append((name, obj))
        if inspect.isclass(obj):
            found += list(_members(obj))
    return found


def test_the_public_api_is_walked():
    names = {name for name, _ in _public_api()}
    expected = {"load", "stream", "compress", "EdgeModel", "EdgeModel.classify", "EdgeModel.encode_image",
                "EdgeModel.encode_text", "EdgeModel.info", "EdgeModel.embed_dim", "Prediction", "Prediction.to_dict",
                "Stream", "Stream.events", "FrameResult.to_dict"}
    assert expected <= names


def test_every_public_name_has_a_docstring_and_a_return_annotation():
    missing_doc, missing_return = [], []
    for name, obj in _public_api():
        if not (inspect.getdoc(obj) or "").strip():
            missing_doc.append(name)
        if callable(obj) and not inspect.isclass(obj):
            if inspect.signature(obj).return_annotation is inspect.Signature.empty:
                missing_return.append(name)
    assert missing_doc == [], f"no docstring: {missing_doc}"
    assert missing_return == [], f"no return annotation: {missing_return}"


def test_load_says_what_it_returns():
    assert inspect.signature(vledge.load).return_annotation in ("EdgeModel", vledge.EdgeModel)
    assert "EdgeModel" in vledge.load.__doc__
