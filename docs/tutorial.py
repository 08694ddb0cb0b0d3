# %% [markdown]
# # Tutorial: from the bandit to a language model on a laptop
#
# (placeholder: the executed tutorial is being written)

# %%
import toy

print(sorted(toy.PRESETS)[:3])
