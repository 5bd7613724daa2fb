"""Name -> component tables that configs select from (`objective.name`, `model.mixer.name`, ...).

Each kind has one `Registry`, kept beside the components it lists (objectives, mixers,
frontends, probe tasks, PEFT methods, datasets). A fork adds a component by registering it from
its own module; nothing in jaxssl needs editing:

  from jaxssl import objectives
  objectives.register("my_objective", MyObjective)   # then objective.name = "my_objective"
"""
import difflib


class Registry:
  """A name -> value table with one-line errors that suggest the closest names."""

  def __init__(self, kind, field, entries=None):
    self.kind, self.field = kind, field  # e.g. "objective", "objective.name"
    self._entries = dict(entries or {})

  def register(self, name, value=None, *, replace=False):
    """Registers `value` under `name`; without `value`, returns a decorator that does."""
    if value is None:
      return lambda v: self.register(name, v, replace=replace)
    if name in self._entries and not replace and self._entries[name] is not value:
      raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r}); "
                       "pass replace=True to override it.")
    self._entries[name] = value
    return value

  def unregister(self, name):
    """Removes `name` (a test's or a fork's temporary entry); unknown names are an error."""
    self.get(name)
    del self._entries[name]

  def get(self, name):
    if name not in self._entries:
      close = difflib.get_close_matches(str(name), self._entries, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"{self.field}={name!r}: unknown {self.kind}; choose from "
                       f"{sorted(self._entries)}.{hint}")
    return self._entries[name]

  def names(self):
    return sorted(self._entries)

  def __contains__(self, name):
    return name in self._entries
