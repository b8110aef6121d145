"""A stand-in for gmcore.training_step.TrainingStep in the tests of models with several networks:
each update backpropagates its loss, records its value and which top-level submodules' parameters
received a gradient, and steps nothing, so a hand computation from the same parameters and draws
can be compared with what the model's ``training_step`` did."""


class RecordingStep:
    def __init__(self, model):
        self.model, self.losses, self.trained = model, {}, {}

    def update(self, name, loss):
        for p in self.model.parameters():
            p.grad = None
        loss.backward()
        self.losses[name] = loss.item()
        self.trained[name] = {k.split(".")[0] for k, p in self.model.named_parameters() if p.grad is not None}
        return self.losses[name]
