"""The ClientApp: every SuperNode trains hf-trust's SupervisedClientTrainer on its partition."""

from hf_trust_flower_app.task import make_federation

_fed, _parts = make_federation()
app = _fed.client_app(_parts)
